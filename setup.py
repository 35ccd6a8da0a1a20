"""Install satnet: `pip install -e .` (add `[test]` for the test tools).

torch is given as a range that the CPU build 2.13.0 satisfies; install that build first
(`pip install torch==2.13.0`) so pip does not pull a multi-GB CUDA build.
"""
from setuptools import find_packages, setup

setup(
    name="satnet",
    version="0.1.0",
    description="Self-configuring medical image segmentation with Select-Attend-Transfer skip connections",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["satnet", "satnet.*"]),
    install_requires=[
        "torch>=2.2",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2",
        "nibabel>=5.0",
        "batchgenerators>=0.25",
        "scikit-learn>=1.2",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "pillow>=9.0",
    ],
    extras_require={"test": ["pytest>=7"], "onnx": ["onnx>=1.16,<2", "onnxruntime>=1.18,<2"],
                    "openvino": ["onnx>=1.16,<2", "openvino>=2024.0,<2027"]},
    entry_points={"console_scripts": ["satnet = satnet.cli:main"]},
)
