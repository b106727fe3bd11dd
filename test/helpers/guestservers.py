# Servers a test runs inside the guest namespace (the kernel's own TCP and UDP), for port forwards.
# TCP: one line "down N" -> N deterministic bytes then close; "up N" -> read N bytes, reply
# "<N> <sha256>\n"; "echo" -> echo until EOF. UDP: echo every datagram. Prints "ready".
import hashlib, socket, sys, threading

def pattern(n):
    out = bytearray()
    block = hashlib.sha256(b'guest').digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])

def serve(conn):
    try:
        f = conn.makefile('rb')
        line = f.readline().decode().strip()
        cmd, _, arg = line.partition(' ')
        if cmd == 'down':
            conn.sendall(pattern(int(arg)))
        elif cmd == 'up':
            n, h, left = int(arg), hashlib.sha256(), int(arg)
            while left > 0:
                b = f.read1(min(left, 1 << 16))
                if not b: break
                h.update(b); left -= len(b)
            conn.sendall(('%d %s\n' % (n - left, h.hexdigest())).encode())
        elif cmd == 'echo':
            while True:
                b = f.read1(65536)
                if not b: break
                conn.sendall(b)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()

def tcp(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

def udp(s):
    while True:
        d, a = s.recvfrom(65535); s.sendto(d, a)

# Bind both before saying "ready", so a test never races the listeners.
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(('0.0.0.0', int(sys.argv[1]))); t.listen(512)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', int(sys.argv[2])))
threading.Thread(target=tcp, args=(t,), daemon=True).start()
threading.Thread(target=udp, args=(u,), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
