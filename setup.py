import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version() -> str:
    text = (HERE / "woollylib" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise RuntimeError("woollylib/_version.py has no __version__")
    return match.group(1)


def read_requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="woollylib",
    version=read_version(),
    description="Train and explain image classifiers on CIFAR-10-sized data with PyTorch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["woollylib", "woollylib.*"]),
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=read_requirements(),
    extras_require={
        "dev": [
            "pytest>=7",
            "pytest-xdist>=3.5",
            "ruff>=0.4",
            "build>=1.0",
            "nbclient>=0.9",
            "nbformat>=5.9",
            "ipykernel>=6.25",
            "psutil>=5.9",
            "tensorboard>=2.12",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "statsmodels>=0.14",
            "gradio>=6.0",
            "gradio_client>=2.0",
            "selenium>=4.20",
        ],
        "app": ["gradio>=6.0"],  # 6.x API: api_visibility, launch(theme=, css=)
        "bench": ["airbench>=0.1.8", "psutil>=5.9"],
        "tensorboard": ["tensorboard>=2.12"],
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": ["woollylib=woollylib.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
