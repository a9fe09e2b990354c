#!/usr/bin/env bash
# Install redis-server and rabbitmq-server, which the integration tests start themselves.
#
# The tests run their own instances on free loopback ports (tests/integration/services.py),
# so the system services the Debian packages would start are not wanted:
#   - rabbitmq-server's postinst runs `invoke-rc.d rabbitmq-server start`: node
#     rabbit@<hostname> on 0.0.0.0:5672 (AMQP) and :25672 (distribution), plus epmd on
#     *:4369; erlang-base also enables epmd.socket under systemd.
#   - redis-server's postinst starts redis on 127.0.0.1:6379.
# While installing we add a policy-rc.d that denies service starts (unless one exists:
# Docker images ship one that does), then disable the units so they stay off after a boot.
# Even when they do run they cannot collide with the tests: test ports come from the
# kernel's ephemeral range (above 32768), each test node runs its own epmd on such a port
# with its own cookie and a unique node name.
#
# Quick and idempotent: exits at once when both servers are installed.
set -euo pipefail

# Debian installs the servers in sbin, which an unprivileged PATH may lack.
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
command -v ip >/dev/null || missing+=(iproute2)  # test_multihost.py: ip netns
command -v chromium >/dev/null || missing+=(chromium)  # test_ui*.py: the dashboard in a browser

if ((${#missing[@]} == 0)); then
    echo "ensure-services: redis-server and rabbitmq-server are installed"
    exit 0
fi

if ((EUID != 0)); then
    echo "ensure-services: missing ${missing[*]}; installing needs root:" >&2
    echo "    sudo $0" >&2
    echo "or install the Debian packages yourself: apt-get install ${missing[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null; then
    echo "ensure-services: missing ${missing[*]} and no apt-get here;" \
        "install them with this system's package manager" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
if [[ ! -e "${policy}" ]]; then
    printf '#!/bin/sh\n# Added by ensure-services.sh while installing.\nexit 101\n' >"${policy}"
    chmod 755 "${policy}"
    trap 'rm -f "${policy}"' EXIT
fi

echo "ensure-services: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

# Off now and after a reboot, in case a pre-existing policy-rc.d let them start.
for svc in "${missing[@]}"; do
    [[ "${svc}" == iproute2 || "${svc}" == chromium ]] && continue # tools, not services
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now "${svc}.service" || true
    else
        service "${svc}" stop >/dev/null 2>&1 || true
        update-rc.d "${svc}" disable >/dev/null 2>&1 || true
    fi
done
if [[ " ${missing[*]} " == *" rabbitmq-server "* && -d /run/systemd/system ]]; then
    systemctl disable --now epmd.socket epmd.service || true
fi

echo "ensure-services: installed ${missing[*]}; their system services are disabled"
