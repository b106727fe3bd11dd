# Shell helpers for test scripts, sourced by /init before /test.sh runs (busybox ash).
#
# vmnat_result K=V...   prints one result line the harness parses (values: no spaces).
# vmnat_lease [IFACE] [TRIES]  leases with udhcpc (TRIES discovers 2 s apart, default 10); the udhcpc script configures the interface and prints
#                       lease=ok ip= mask= router= dns= lease_s= lease_uptime_s=; on failure
#                       prints lease=fail. Returns udhcpc's status.
# vmnat_ping HOST [COUNT] [KEY]  pings; prints KEY=ok|fail (KEY defaults to ping).
# vmnat_fetch URL [SECONDS] [KEY] wget through `timeout` (busybox 1.35's wget -T segfaults);
#                       prints KEY=ok|fail, KEY_bytes= and KEY_md5=.

vmnat_result() {
  echo "VMNAT-RESULT $*"
}

vmnat_uptime() {
  cut -d' ' -f1 /proc/uptime
}

vmnat_lease() {
  # 10 discovers 2 s apart: generous for a loaded host under TCG, still well inside the harness
  # timeout. The event script's result lines go through udhcpc's stdout, i.e. this log.
  if udhcpc -i "${1:-eth0}" -s /etc/udhcpc.script -f -q -n -t "${2:-10}" -T 2 -A 1 >/tmp/udhcpc.log 2>&1; then
    grep '^VMNAT-RESULT' /tmp/udhcpc.log
    return 0
  fi
  grep '^VMNAT-RESULT' /tmp/udhcpc.log
  vmnat_result "lease=fail"
  grep -v '^VMNAT-RESULT' /tmp/udhcpc.log | sed 's/^/udhcpc: /'
  return 1
}

vmnat_ping() {
  if ping -c "${2:-2}" -W 5 "$1" >/tmp/ping.log 2>&1; then
    vmnat_result "${3:-ping}=ok"
    return 0
  fi
  vmnat_result "${3:-ping}=fail"
  sed 's/^/ping: /' /tmp/ping.log
  return 1
}

vmnat_fetch() {
  if timeout "${2:-20}" wget -q -O /tmp/fetch.out "$1" 2>/tmp/fetch.log; then
    vmnat_result "${3:-fetch}=ok" "${3:-fetch}_bytes=$(wc -c </tmp/fetch.out)" \
      "${3:-fetch}_md5=$(md5sum /tmp/fetch.out | cut -d' ' -f1)"
    return 0
  fi
  vmnat_result "${3:-fetch}=fail"
  sed 's/^/wget: /' /tmp/fetch.log
  return 1
}
