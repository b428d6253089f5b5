"""Renders the EC2 files of a stage from `.chalice/config.json`, so the engine and the
streamer use exactly the names the stage's Lambda functions use.

- `env PART`: `deploy/PART.env.example` with every variable the stage also sets (stream and
  table names, cache hosts, `WEBSOCKET_ENDPOINT`, ...) replaced by the stage's value;
  comments and the other defaults are kept. Install it as `/etc/supernoba/PART.env`.
- `policy PART`: `deploy/iam/ec2-PART-policy.json` (written for `prod`) with the stage's
  stream names and API Gateway stage.

    python -m tools.stage_render --stage dev env engine > /etc/supernoba/engine.env
    python -m tools.stage_render --stage dev policy streamer > streamer-policy.json

Errors (exit 1, message on stderr): unknown stage, unreadable config (ProvisionError).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from tools.provision import DEFAULT_CONFIG, ProvisionError, stage_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
PARTS = ("engine", "streamer")
#: The stage the files in deploy/ are written for.
TEMPLATE_STAGE = "prod"
_ASSIGN = re.compile(r"^(#?)([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


#: cache URLs a stage may set; the examples only mention them in comments (SPEC §8: they win
#: over the *_HOST variables), so a stage's value is appended when it has one
_URL_KEYS = {"engine": ("DEPTH_CACHE_URL", "BACKUP_CACHE_URL"), "streamer": ("DEPTH_CACHE_URL",)}


def render_env(part: str, stage: str, config_path: Path | str = DEFAULT_CONFIG) -> str:
    env = stage_environment(stage, config_path)
    lines = []
    written: set[str] = set()
    for line in (REPO_ROOT / "deploy" / f"{part}.env.example").read_text().splitlines():
        m = _ASSIGN.match(line)
        if m and not m.group(1) and m.group(2) in env:
            line = f"{m.group(2)}={env[m.group(2)]}"
            written.add(m.group(2))
        lines.append(line)
    urls = [k for k in _URL_KEYS.get(part, ()) if env.get(k) and k not in written]
    if urls:
        lines += ["", "# the stage's cache URLs (they win over the *_HOST lines above)"]
        lines += [f"{k}={env[k]}" for k in urls]
    lines.insert(0, f"# rendered for stage {stage} by `python -m tools.stage_render --stage {stage} env {part}`")
    return "\n".join(lines) + "\n"


def render_policy(part: str, stage: str, config_path: Path | str = DEFAULT_CONFIG) -> str:
    config = json.loads(Path(config_path).read_text())
    stage_env = stage_environment(stage, config_path)
    base_env = stage_environment(TEMPLATE_STAGE, config_path)
    renames = {f"stream/{base_env[k]}": f"stream/{stage_env[k]}"
               for k in ("KINESIS_ORDERS_STREAM", "KINESIS_FILLS_STREAM", "KINESIS_STATUS_STREAM")}
    base_gw = config["stages"][TEMPLATE_STAGE]["api_gateway_stage"]
    gw = config["stages"][stage].get("api_gateway_stage", "api")

    def fix(resource: str) -> str:
        for old, new in renames.items():
            if resource.endswith(old):
                return resource[: -len(old)] + new
        return resource.replace(f"/{base_gw}/", f"/{gw}/") if ":execute-api:" in resource else resource

    policy = json.loads((REPO_ROOT / "deploy" / "iam" / f"ec2-{part}-policy.json").read_text())
    for statement in policy["Statement"]:
        res = statement["Resource"]
        statement["Resource"] = [fix(r) for r in res] if isinstance(res, list) else fix(res)
    return json.dumps(policy, indent=2) + "\n"


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.stage_render", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", required=True, help="stage of the Chalice config (dev, prod, ...)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="Chalice config file (default: %(default)s)")
    p.add_argument("what", choices=("env", "policy"), help="environment file or EC2 role policy")
    p.add_argument("part", choices=PARTS, help="which EC2 process")
    args = p.parse_args(list(argv) if argv is not None else None)
    try:
        render = render_env if args.what == "env" else render_policy
        sys.stdout.write(render(args.part, args.stage, args.config))
    except ProvisionError as exc:
        print(f"stage_render: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
