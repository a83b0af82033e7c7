"""Packaging for mtcnn-caffe. Caffe itself is built by `make setup` (see README)."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="mtcnn-caffe",
    version="0.1.0",
    description="Caffe-faithful MTCNN face detection/alignment and MobileNet-SSD toolkit",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["caffe_common", "caffe_common.*", "mtcnn_caffe", "mtcnn_caffe.*", "ssd_mobilenet", "ssd_mobilenet.*"]),
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.5,<5",
        "protobuf",
        "lmdb",
        "scikit-image",
        "scipy",
        "six",
        "tqdm",
        "matplotlib",
    ],
    entry_points={
        "console_scripts": [
            "mtcnn-caffe=mtcnn_caffe.cli:main",
            "ssd-mobilenet=ssd_mobilenet.cli:main",
        ]
    },
    license="MIT",
)
