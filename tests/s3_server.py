"""An S3-compatible server for tests: moto's server mode as a subprocess on 127.0.0.1.

Every process that talks to it gets ``s3_env``: dummy credentials, the loopback endpoint, no
instance-metadata lookups, no AWS config files, and a proxy on a closed loopback port for
everything but loopback, so that s3fs/botocore cannot reach any other address even when the
code under test (or a default) asks for one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid

# Port 9 (discard) on loopback: nothing listens there, so a request through this proxy fails
# at once instead of leaving the machine.
_DEAD_PROXY = "http://127.0.0.1:9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment variables that point boto/s3fs at ``endpoint`` and nowhere else."""
    return {
        "AWS_ACCESS_KEY_ID": "podscribe-test",
        "AWS_SECRET_ACCESS_KEY": "podscribe-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "HTTP_PROXY": _DEAD_PROXY,
        "HTTPS_PROXY": _DEAD_PROXY,
        "http_proxy": _DEAD_PROXY,
        "https_proxy": _DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


class MotoServer:
    """``python -m moto.server`` on a free loopback port, until ``stop``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server not listening on {self.endpoint} after {timeout_s} s")

    def new_bucket(self) -> str:
        """A fresh, empty bucket (its name)."""
        import boto3

        name = f"podscribe-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="podscribe-test",
            aws_secret_access_key="podscribe-test",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
