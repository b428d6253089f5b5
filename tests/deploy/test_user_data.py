"""deploy/ec2-user-data.sh: the first-boot script of the engine and streamer instances installs
the SSM agent (Debian's AMIs have none, and the instances have no SSH), and docs/deploy.md
launches every instance with it. Run here with stand-ins for curl, dpkg, apt-get and systemctl."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "ec2-user-data.sh"

_STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $*" in
  "curl "*api/token*) echo TOKEN ;;
  "curl "*placement/region*) [[ "$*" == *"X-aws-ec2-metadata-token: TOKEN"* ]] && echo eu-west-3 ;;
  "curl "*) while [ $# -gt 0 ]; do if [ "$1" = -o ]; then echo deb > "$2"; fi; shift; done ;;
  "dpkg --print-architecture") echo arm64 ;;
  "dpkg -i "*) [ -s "$2" ] || exit 1 ;;
esac
"""


def test_user_data_installs_the_ssm_agent_of_the_instances_region_and_arch(tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("curl", "dpkg", "apt-get", "systemctl"):
        (stubs / name).write_text(_STUB)
        (stubs / name).chmod(0o755)
    log = tmp_path / "calls.log"
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    url = "https://s3.eu-west-3.amazonaws.com/amazon-ssm-eu-west-3/latest/debian_arm64/amazon-ssm-agent.deb"
    download = [c for c in calls if c.startswith("curl ") and url in c]
    assert download, calls
    deb = download[0].split(" -o ", 1)[1].split()[0]
    assert f"dpkg -i {deb}" in calls
    assert calls[-1] == "systemctl enable --now amazon-ssm-agent"
    assert calls.index(f"dpkg -i {deb}") < calls.index("systemctl enable --now amazon-ssm-agent")


def test_every_instance_of_the_guide_boots_with_the_user_data():
    text = (REPO / "docs" / "deploy.md").read_text()
    launches = re.findall(r"aws ec2 run-instances (?:[^\n]*\\\n)*[^\n]*", text)
    assert len(launches) >= 3, "two engines and a streamer"
    for cmd in launches:
        assert "--user-data file://deploy/ec2-user-data.sh" in cmd, cmd
        assert "--key-name" not in cmd, "the guide reaches instances with Session Manager only"
