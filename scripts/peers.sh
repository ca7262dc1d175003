#!/usr/bin/env bash
# Detects, installs and starts the real servers the test suite talks to.
# Sourced by scripts/test and scripts/bench-*; every function is idempotent and
# binds loopback only. Installs need root (apt-get); without root a missing
# peer is an error that names the package.
set -euo pipefail

PEERS_CACHE="${PRIORFETCH_CACHE:-$HOME/.cache/priorfetch}"
PEERS_RUN="${PRIORFETCH_RUN_DIR:-/tmp/priorfetch-peers}"
mkdir -p "$PEERS_CACHE" "$PEERS_RUN"
export TCP_NODELAY=1 # DCMTK (and Orthanc) keep Nagle on otherwise: 30x slower C-GET

log() { printf '[peers] %s\n' "$*" >&2; }

_apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root or install them)"; return 1
  fi
  # policy-rc.d keeps Debian's maintainer scripts from starting daemons (orthanc)
  # on 0.0.0.0:4242; tests start their own instances on chosen ports.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  # apt fails for passing reasons (a held dpkg lock, stale lists after a mirror
  # update, a dropped download): wait for the lock, refresh the lists and retry
  # before giving up, and say which packages could not be installed.
  local attempt apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  for attempt in 1 2 3; do
    if [ $_apt_updated = 0 ] || [ "$attempt" -gt 1 ]; then
      log "apt-get update"
      DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -qq >/dev/null || true
      _apt_updated=1
    fi
    dpkg --configure -a >/dev/null 2>&1 || true
    log "apt-get install ${missing[*]} (attempt $attempt)"
    if DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq \
         --no-install-recommends --fix-missing "${missing[@]}" >"$PEERS_RUN/apt.log" 2>&1; then
      rm -f /usr/sbin/policy-rc.d; return 0
    fi
    log "apt-get failed: $(tail -3 "$PEERS_RUN/apt.log" | tr '\n' ' ')"
    sleep $((attempt * 10))
  done
  rm -f /usr/sbin/policy-rc.d
  log "could not install: ${missing[*]}"; return 1
}

wait_port() { # host port tenths-of-a-second
  local i
  for ((i = 0; i < $3; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

ensure_build_tools() {
  # rdkafka's bundled librdkafka (cmake-build) compiles against these headers
  apt_install cmake pkg-config build-essential libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev
}

ensure_postgres() {
  if ! wait_port 127.0.0.1 5432 2; then
    apt_install postgresql
    local v; v=$(ls /etc/postgresql | sort -n | tail -1)
    # trust auth on loopback, as the tests connect as postgres without password
    local hba="/etc/postgresql/$v/main/pg_hba.conf"
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$v" main start
    wait_port 127.0.0.1 5432 300 || { log "postgres did not start"; return 1; }
  fi
  export PRIORFETCH_TEST_POSTGRES="${PRIORFETCH_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
  log "postgres up at $PRIORFETCH_TEST_POSTGRES"
}

ensure_rabbitmq() {
  if ! wait_port 127.0.0.1 5672 2; then
    apt_install rabbitmq-server
    log "starting rabbitmq (10-20 s)"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    timeout 90 rabbitmqctl await_startup >/dev/null 2>&1 || true
    wait_port 127.0.0.1 5672 600 || { log "rabbitmq did not start"; return 1; }
  fi
  export PRIORFETCH_TEST_AMQP="${PRIORFETCH_TEST_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}"
  log "rabbitmq up"
}

TANSU_VERSION=0.6.0
ensure_kafka() {
  local bin="$PEERS_CACHE/tansu-$TANSU_VERSION/bin/tansu"
  if [ ! -x "$bin" ]; then
    ensure_build_tools
    log "building tansu $TANSU_VERSION (Kafka-API broker; ~17 min once, then cached in $PEERS_CACHE)"
    CARGO_TARGET_DIR="$PEERS_CACHE/tansu-build" nice -n 10 cargo install tansu --version "$TANSU_VERSION" \
      --locked --features dynostore --root "$PEERS_CACHE/tansu-$TANSU_VERSION" -q
    rm -rf "$PEERS_CACHE/tansu-build"
  fi
  export PRIORFETCH_TEST_KAFKA="${PRIORFETCH_TEST_KAFKA:-127.0.0.1:9092}"
  # tests that need a broker of their own (Kafka over TLS) start another tansu
  export PRIORFETCH_TANSU_BIN="$bin"
  if ! wait_port 127.0.0.1 9092 2; then
    log "starting tansu on 127.0.0.1:9092"
    nohup "$bin" broker --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine memory://tansu/ >"$PEERS_RUN/tansu.log" 2>&1 &
    wait_port 127.0.0.1 9092 300 || { log "tansu did not start: $(tail -5 "$PEERS_RUN/tansu.log")"; return 1; }
  fi
  log "kafka (tansu) up"
}

ensure_dicom_tools() {
  # openssl and socat: test certificates, and HTTPS in front of Orthanc (crates/testkit)
  apt_install dcmtk orthanc orthanc-dicomweb python3-pydicom openssl socat
  # tests start their own Orthanc/dcmqrscp/storescp instances on chosen loopback
  # ports; the packaged daemon must not hold 4242.
  if pgrep -x Orthanc >/dev/null && [ -z "${PRIORFETCH_KEEP_ORTHANC:-}" ] && \
     ss -ltn 2>/dev/null | grep -q ':4242 '; then
    log "stopping the packaged Orthanc daemon on :4242"; pkill -x Orthanc || true
  fi
  export PRIORFETCH_ORTHANC_BIN="$(command -v Orthanc)"
  export PRIORFETCH_ORTHANC_PLUGINS="/usr/share/orthanc/plugins"
  log "dcmtk $(storescp --version 2>/dev/null | sed -n 's/.* v\([0-9.]*\) .*/\1/p' | head -1) and orthanc present"
}

ensure_hl7_clients() {
  # python-hl7 (MLLPClient, mllp_send) and hl7apy: third-party HL7 clients that the MLLP
  # tests send with and parse our ACKs with.
  if python3 -c 'import hl7, hl7apy' 2>/dev/null && command -v mllp_send >/dev/null; then
    return 0
  fi
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  log "pip install hl7 hl7apy"
  python3 -m pip install -q hl7 hl7apy 2>/dev/null ||
    python3 -m pip install -q --break-system-packages hl7 hl7apy
  command -v mllp_send >/dev/null || export PATH="$PATH:$(python3 -m site --user-base)/bin:/usr/local/bin"
  python3 -c 'import hl7, hl7apy' && command -v mllp_send >/dev/null ||
    { log "hl7/hl7apy not usable after pip install"; return 1; }
}

ensure_chromium() {
  # the web console's browser tests (services/console/tests/browser.rs) drive Debian's
  # chromium through chromedriver (WebDriver); no browser is downloaded
  if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    apt_install chromium chromium-driver
  fi
  export PRIORFETCH_CHROMEDRIVER="$(command -v chromedriver)"
  export PRIORFETCH_CHROMIUM="$(command -v chromium)"
  log "$(chromium --version 2>/dev/null | head -1) with chromedriver present"
}

ensure_all_peers() {
  ensure_build_tools
  ensure_hl7_clients
  ensure_postgres
  ensure_rabbitmq
  ensure_dicom_tools
  ensure_kafka
  ensure_chromium
}
