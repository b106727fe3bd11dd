"""Tiny TCP probes for bench/tcp.ts (python3 is on the host and, being the same file system, in the
namespaces too).

  probe.py rr-server               listen on 127.0.0.1:0, print the port, echo 1 byte at a time forever
  probe.py rr-server [ADDR PORT]    the same on ADDR:PORT (a guest's server behind a port forward)
  probe.py crr-server              listen on 127.0.0.1:0, print the port, accept+close forever;
                                   on SIGTERM print {"accepted": N}
  probe.py rr-client HOST PORT S   1-byte ping-pongs over one connection for S seconds -> JSON
  probe.py crr-client HOST PORT S  connect()+close() for S seconds -> JSON
  probe.py hold-server             listen on 127.0.0.1:0, print the port, accept and keep every connection
  probe.py hold-client HOST PORT N open N connections, print {"held": N}, keep them until killed

Clients print one JSON line; on any socket error or stall (3 s, an interval timer) they print {"error": ...} and exit 1,
so a broken engine shows up as a failed measurement instead of a hang. The round-trip client warms up
(200 round trips) before its clock starts, so connection setup and the interpreter's first-iteration
costs are not measured.
"""
import json
import signal
import socket
import sys
import time

STALL = 3.0


def listen(addr="127.0.0.1", port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1024)
    print(s.getsockname()[1], flush=True)
    return s


def rr_server(addr="127.0.0.1", port=0):
    s = listen(addr, port)
    while True:
        c, _ = s.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                b = c.recv(1)
                if not b:
                    break
                c.sendall(b)
        except OSError:
            pass
        c.close()


def crr_server():
    s = listen()
    n = 0

    def report(*_):
        print(json.dumps({"accepted": n}), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    while True:
        c, _ = s.accept()
        n += 1
        c.close()


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold_server():
    raise_nofile()
    s = listen()
    held = []
    while True:
        c, _ = s.accept()
        held.append(c)


def hold_client(host, port, n):
    raise_nofile()
    held = []
    for _ in range(n):
        held.append(socket.create_connection((host, port), timeout=10))
    print(json.dumps({"held": len(held)}), flush=True)
    while True:
        time.sleep(3600)  # until the benchmark kills us


def stalled(*_):
    raise OSError(f"stalled for {STALL} s")


def watchdog():
    # A socket timeout would add a poll() to every call; a re-armed interval timer costs nothing
    # per round trip and still turns a stall into an error.
    signal.signal(signal.SIGALRM, stalled)
    signal.setitimer(signal.ITIMER_REAL, STALL)


def rr_client(host, port, secs):
    watchdog()
    c = socket.create_connection((host, port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send, recv = c.send, c.recv
    for _ in range(200):
        send(b"x")
        if not recv(1):
            raise OSError("server closed")
    n = 0
    t0 = time.perf_counter()
    end = t0 + secs
    now = t0
    while now < end:
        for _ in range(64):
            send(b"x")
            if not recv(1):
                raise OSError("server closed")
        n += 64
        now = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, STALL)
    dt = now - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    c.close()
    return {"round_trips": n, "secs": dt, "per_sec": n / dt, "rtt_us": dt / n * 1e6}


def crr_client(host, port, secs):
    watchdog()
    n = 0
    t0 = time.perf_counter()
    end = t0 + secs
    now = t0
    addr = (host, port)
    while now < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(addr)
        s.close()
        n += 1
        if n & 63 == 0:
            signal.setitimer(signal.ITIMER_REAL, STALL)
        now = time.perf_counter()
    dt = now - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    return {"connections": n, "secs": dt, "per_sec": n / dt}


def main():
    mode = sys.argv[1]
    if mode == "rr-server":
        rr_server(*((sys.argv[2], int(sys.argv[3])) if len(sys.argv) > 3 else ()))
    elif mode == "crr-server":
        crr_server()
    elif mode == "hold-server":
        hold_server()
    elif mode == "hold-client":
        try:
            hold_client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        except OSError as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
            sys.exit(1)
    else:
        host, port, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        try:
            r = (rr_client if mode == "rr-client" else crr_client)(host, port, secs)
        except OSError as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
            sys.exit(1)
        print(json.dumps(r), flush=True)


main()
