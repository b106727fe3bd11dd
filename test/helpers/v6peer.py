# IPv6 peers for the IPv6 end-to-end tests, run inside a network namespace.
#
#   serve ADDR [NAME=IP ...]
#       HTTP on [ADDR]:0 (GET /N -> N deterministic bytes, the pattern of guestservers.py), UDP echo on
#       [ADDR]:0, and a tiny DNS server on 127.0.0.1:0 answering A/AAAA for the NAME=IP pairs
#       (NXDOMAIN otherwise). Prints "ready http=P udp=P dns=P" once all are bound.
#   ra IFACE
#       Sends a Router Solicitation on IFACE from a raw ICMPv6 socket and prints the first Router
#       Advertisement's fields and options as JSON (what rdisc6 would show: RDNSS, DNSSL, MTU, prefix).
import hashlib, http.server, ipaddress, json, socket, struct, sys, threading

def pattern(n):
    out = bytearray()
    block = hashlib.sha256(b'guest').digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        try:
            n = int(self.path.strip('/'))
        except ValueError:
            self.send_error(404); return
        body = pattern(n)
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

class Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

def dns_name(msg, off):
    labels = []
    while True:
        n = msg[off]; off += 1
        if n == 0: break
        labels.append(msg[off:off + n].decode()); off += n
    return '.'.join(labels).lower(), off

def dns(sock, names):
    while True:
        q, a = sock.recvfrom(4096)
        try:
            ident, flags, qd = struct.unpack('!HHH', q[:6])
            name, off = dns_name(q, 12)
            qtype, qclass = struct.unpack('!HH', q[off:off + 4])
        except Exception:
            continue
        question = q[12:off + 4]
        answers = []
        for ip in names.get(name, []):
            addr = ipaddress.ip_address(ip)
            t = 1 if addr.version == 4 else 28
            if t == qtype:
                answers.append(b'\xc0\x0c' + struct.pack('!HHIH', t, 1, 60, len(addr.packed)) + addr.packed)
        rcode = 0 if name in names else 3
        head = struct.pack('!HHHHHH', ident, 0x8400 | rcode, 1, len(answers), 0, 0)
        sock.sendto(head + question + b''.join(answers), a)

def serve(addr, pairs):
    names = {}
    for p in pairs:
        n, _, ip = p.partition('=')
        names.setdefault(n.lower(), []).append(ip)
    h = Server6((addr, 0), H)
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind((addr, 0))
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.bind(('127.0.0.1', 0))
    threading.Thread(target=h.serve_forever, daemon=True).start()
    def echo():
        while True:
            b, a = u.recvfrom(65535); u.sendto(b, a)
    threading.Thread(target=echo, daemon=True).start()
    threading.Thread(target=dns, args=(d, names), daemon=True).start()
    print('ready http=%d udp=%d dns=%d' % (h.server_address[1], u.getsockname()[1], d.getsockname()[1]), flush=True)
    threading.Event().wait()

def ra(iface):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.settimeout(5)
    idx = socket.if_nametoindex(iface)
    s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ('ff02::2', 0, 0, idx))
    while True:
        m, a = s.recvfrom(2048)
        if m[0] == 134: break
    out = {'from': a[0].split('%')[0], 'hop_limit': m[4], 'managed': bool(m[5] & 0x80), 'other': bool(m[5] & 0x40),
           'router_lifetime': struct.unpack('!H', m[6:8])[0], 'rdnss': [], 'dnssl': [], 'prefixes': []}
    off = 16
    while off + 2 <= len(m):
        t, l = m[off], m[off + 1] * 8
        if l == 0: break
        o = m[off:off + l]
        if t == 1: out['source_mac'] = ':'.join('%02x' % b for b in o[2:8])
        elif t == 5: out['mtu'] = struct.unpack('!I', o[4:8])[0]
        elif t == 3:
            out['prefixes'].append({'prefix': '%s/%d' % (ipaddress.ip_address(o[16:32]), o[2]), 'onlink': bool(o[3] & 0x80),
                                    'autonomous': bool(o[3] & 0x40), 'valid': struct.unpack('!I', o[4:8])[0]})
        elif t == 25:
            out['rdnss_lifetime'] = struct.unpack('!I', o[4:8])[0]
            for i in range(8, l, 16): out['rdnss'].append(str(ipaddress.ip_address(o[i:i + 16])))
        elif t == 31:
            i = 8
            while i < l and o[i] != 0:
                labels = []
                while o[i] != 0:
                    labels.append(o[i + 1:i + 1 + o[i]].decode()); i += 1 + o[i]
                i += 1
                out['dnssl'].append('.'.join(labels))
        off += l
    print(json.dumps(out), flush=True)

if __name__ == '__main__':
    if sys.argv[1] == 'serve': serve(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == 'ra': ra(sys.argv[2])
