"""chalice_app.logs: the one logging setup of the project's processes.

Each case runs in a fresh interpreter: pytest's own log capture holds handlers on the root
logger, which would hide what `setup_logging` does to a process that starts with none.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from chalice_app.logs import setup_logging\nimport logging\n" + code],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=True, timeout=60)


def test_project_format_on_stderr_at_the_named_level():
    p = run('setup_logging("debug")\nlogging.getLogger("supernoba.x").debug("event=hello order=o1")')
    assert p.stdout == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ DEBUG supernoba\.x event=hello order=o1\n", p.stderr)


def test_noisy_client_loggers_are_quieted():
    p = run('setup_logging("DEBUG")\nlogging.getLogger("botocore").info("chatter")\n'
            'logging.getLogger("botocore").warning("event=boto_warn")')
    assert "chatter" not in p.stderr
    assert "event=boto_warn" in p.stderr


def test_second_call_changes_the_level_without_a_second_handler():
    p = run('setup_logging(logging.INFO)\nsetup_logging(logging.ERROR)\n'
            'log = logging.getLogger("supernoba.x")\nlog.warning("event=dropped")\nlog.error("event=kept")\n'
            'print(len(logging.getLogger().handlers))')
    assert p.stdout.strip() == "1"
    assert "event=dropped" not in p.stderr
    assert p.stderr.count("event=kept") == 1


def test_unknown_level_name_falls_back_to_info():
    p = run('setup_logging("chatty")\nlog = logging.getLogger("supernoba.x")\nlog.debug("event=d")\nlog.info("event=i")')
    assert "event=d" not in p.stderr and "event=i" in p.stderr
