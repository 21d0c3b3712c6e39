"""Runs the real ``fleetward`` command in a subprocess on a loopback port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx

# A deployment that exists to be probed: thousands of requests a minute as a few actors,
# mostly for vehicles not theirs, is what quotas and the enumeration guard stop, so the
# probed server's limits are raised out of the way (as .ci/probe-run does).
PROBED_QUOTAS: Final[dict[str, str]] = {
    "FLEETWARD_QUOTA_USER_PER_MINUTE": "1000000",
    "FLEETWARD_QUOTA_TENANT_PER_MINUTE": "1000000",
    "FLEETWARD_QUOTA_CLIENT_PER_MINUTE": "1000000",
    "FLEETWARD_QUOTA_FLOWS": json.dumps(
        {
            flow: 1_000_000
            for flow in (
                "remote-unlock",
                "bulk-location",
                "diagnostic-request",
                "driver-invitation",
                "ownership-transfer",
                "bulk-fleet-command",
            )
        }
    ),
    # The probe's accepted commands (each cancelled at once): 16 on the fleet's main vehicle.
    "FLEETWARD_QUOTA_VEHICLE_COMMANDS_PER_MINUTE": "1000",
    "FLEETWARD_QUOTA_ENUMERATION_SLOW_DISTINCT": "1000000",
    "FLEETWARD_QUOTA_ENUMERATION_STOP_DISTINCT": "1000000",
    "FLEETWARD_QUOTA_ENUMERATION_SLOW_RUN": "1000",
    "FLEETWARD_QUOTA_ENUMERATION_STOP_RUN": "1000",
}


def fleetward_env(
    data_dir: Path, port: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWARD_")}
    env.update(
        {
            "FLEETWARD_DATA_DIR": str(data_dir),
            "FLEETWARD_PORT": str(port),
            "FLEETWARD_HOST": "127.0.0.1",
            "FLEETWARD_PASSWORD_HASH_MEMORY_KIB": "19456",
            "FLEETWARD_PASSWORD_HASH_TIME_COST": "2",
        }
    )
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "fleetward", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class LoggedProcess(subprocess.Popen[str]):
    """A server process whose output goes to files, not pipes: a pipe nobody reads fills up
    with access-log lines and stalls the server. ``communicate`` waits for the process and
    returns what it wrote, like ``Popen.communicate`` with pipes."""

    def __init__(self, args: list[str], *, env: Mapping[str, str]) -> None:
        self._logs = Path(tempfile.mkdtemp(prefix="fleetward-server-"))
        self._out = (self._logs / "stdout.log").open("w", encoding="utf-8")
        self._err = (self._logs / "stderr.log").open("w", encoding="utf-8")
        self._output: tuple[str, str] | None = None
        super().__init__(args, env=dict(env), stdout=self._out, stderr=self._err, text=True)

    def stop(self, timeout: float = 60) -> tuple[str, str]:
        """SIGTERM, then its output once it has exited. A process still running after
        ``timeout`` is killed and the test fails with the end of its log (where it hung)."""
        self.terminate()
        try:
            return self.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            _out, err = self.communicate()
            raise AssertionError(
                f"fleetward did not stop within {timeout:.0f} s of SIGTERM; its log ends:\n"
                + err[-3000:]
            ) from None

    def communicate(
        self, input: str | None = None, timeout: float | None = None
    ) -> tuple[str, str]:
        self.wait(timeout=timeout)
        if self._output is None:
            self._out.close()
            self._err.close()
            self._output = (
                (self._logs / "stdout.log").read_text(encoding="utf-8"),
                (self._logs / "stderr.log").read_text(encoding="utf-8"),
            )
            shutil.rmtree(self._logs, ignore_errors=True)
        return self._output


@contextmanager
def running(
    *args: str, env: Mapping[str, str], port: int, ready_path: str = "/healthz", timeout: float = 60
) -> Iterator[LoggedProcess]:
    process = LoggedProcess([sys.executable, "-m", "fleetward", *args], env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                _out, err = process.communicate()
                raise RuntimeError(f"fleetward exited early: {err[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise TimeoutError("fleetward did not start in time") from None
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
