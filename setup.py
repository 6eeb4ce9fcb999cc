from setuptools import find_packages, setup


def version():
    with open("gostgev/__init__.py", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__")


setup(
    name="gostgev",
    version=version(),
    description="GOST v3 compatible reverse proxy and intranet tunnel on gevent",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["gostgev", "gostgev.*"]),
    python_requires=">=3.10",
    install_requires=[
        "gevent>=23.9",
        "pyopenssl>=23.2",
        "configargparse>=1.7",
        "pyyaml>=6.0",
        "redis>=5.0",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "test": ["pytest>=7.4", "pytest-timeout>=2.2", "pytest-randomly>=3.15", "hypothesis>=6.90", "cryptography>=41",
                 "selenium>=4.10"],
        "lint": ["ruff>=0.4"],
    },
    entry_points={"console_scripts": ["gostgev=gostgev.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Internet :: Proxy Servers",
    ],
)
