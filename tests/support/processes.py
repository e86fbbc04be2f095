"""Child processes for the test suite: this module owns starting a process with its stdout and stderr in a
log file, and stopping it by pid (SIGTERM, a bounded wait, then SIGKILL) so that no test leaves one behind.
Every helper that spawns something (Redis, the fastdtm node) goes through `LoggedProcess`."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

LOG_TAIL_LINES = 60


class LoggedProcess:
    """One child process whose stdout and stderr go to `log_path`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=None if env is None else dict(env),
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_text(), lines)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Safe to call twice."""
        if self.alive():
            self._proc.terminate()
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL and reap: what a crashed machine looks like to the others."""
        if self.alive():
            self._proc.kill()
            self._proc.wait()
        self._log.close()


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])
