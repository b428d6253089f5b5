#!/bin/bash
# EC2 user data of the engine and streamer instances (docs/deploy.md, step 7):
#   aws ec2 run-instances ... --user-data file://deploy/ec2-user-data.sh
# Debian's AMIs do not ship the SSM agent, and the instances have no SSH port or key pair:
# without it `aws ssm start-session` never reaches them. cloud-init runs this once, as root,
# at first boot: it installs the agent of the instance's region and architecture from the
# regional bucket (through the private subnets' NAT gateway or S3 gateway endpoint).
# Its output is in /var/log/cloud-init-output.log.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v curl >/dev/null; then apt-get update -q && apt-get install -y -q curl; fi
imds=http://169.254.169.254/latest
token=$(curl -fsS -X PUT "$imds/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
region=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/placement/region")
arch=$(dpkg --print-architecture)
dir=$(mktemp -d)
curl -fsS --retry 5 -o "$dir/amazon-ssm-agent.deb" \
  "https://s3.$region.amazonaws.com/amazon-ssm-$region/latest/debian_$arch/amazon-ssm-agent.deb"
dpkg -i "$dir/amazon-ssm-agent.deb"
rm -rf "$dir"
systemctl enable --now amazon-ssm-agent
