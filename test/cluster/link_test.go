package cluster

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
)

// linkProxy stands for the link between the registry and everyone who
// reaches it through the proxy's address: a TCP proxy that counts the bytes
// clients send, by client (a connection belongs to one process's transport,
// named by the User-Agent of its first request: "barge-edgepuller",
// "barge", ...), and can trip once a client has sent a given number of
// bytes: it forwards exactly that many, calls a function at that point (a
// SIGKILL of the client, say) and then cuts every connection of that
// client. A cut closes the client's side and half-closes the registry's,
// so that the registry reads what crossed, as after a real cut, rather than
// losing its socket buffer to a reset.
type linkProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	sent  map[string]int64 // by client
	links map[*link]bool
	trip  *tripwire
	down  map[string]bool // clients whose link is cut while a trip fires
}

type link struct {
	who            string
	client, server net.Conn
}

// cut ends the client's side and half-closes the registry's.
func (l *link) cut() {
	l.client.Close()
	l.server.(*net.TCPConn).CloseWrite()
}

// tripwire is armed for one client at a byte count.
type tripwire struct {
	who   string
	at    int64
	fn    func()
	fired chan struct{}
}

func startLinkProxy(t *testing.T, target string) *linkProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{l: l, target: target, sent: map[string]int64{}, links: map[*link]bool{}, down: map[string]bool{}}
	go p.serve()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for lk := range p.links {
			lk.client.Close()
			lk.server.Close()
		}
	})
	return p
}

// Host is the address to name as the registry (host:port).
func (p *linkProxy) Host() string { return p.l.Addr().String() }

// Sent is what client has sent through the link, request headers included.
func (p *linkProxy) Sent(client string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[client]
}

// Clients lists the bytes each client sent.
func (p *linkProxy) Clients() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int64{}
	for k, v := range p.sent {
		out[k] = v
	}
	return out
}

// tripAt arms the tripwire: once client has sent n bytes in all, fn (if
// set) is called, then every connection of client is cut, once. The
// returned channel is closed after the cut.
func (p *linkProxy) tripAt(client string, n int64, fn func()) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trip = &tripwire{who: client, at: n, fn: fn, fired: make(chan struct{})}
	return p.trip.fired
}

func (p *linkProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

func (p *linkProxy) relay(client net.Conn) {
	head, err := readHead(client)
	if len(head) == 0 {
		client.Close()
		return
	}
	server, derr := net.Dial("tcp", p.target)
	if derr != nil {
		client.Close()
		return
	}
	lk := &link{who: clientOf(head), client: client, server: server}
	p.mu.Lock()
	p.links[lk] = true
	p.mu.Unlock()
	go func() {
		// Drain the registry's answers even after the client is gone, so
		// that closing this side never resets the registry's.
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				client.Write(buf[:n])
			}
			if err != nil {
				break
			}
		}
		client.Close()
		server.Close()
		p.mu.Lock()
		delete(p.links, lk)
		p.mu.Unlock()
	}()
	defer lk.cut()
	if !p.forward(lk, head) || err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 && !p.forward(lk, buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}

// forward sends b to the registry, up to the tripwire, and fires it when
// it is reached. It reports whether the link is still up.
func (p *linkProxy) forward(lk *link, b []byte) bool {
	p.mu.Lock()
	if p.down[lk.who] {
		p.mu.Unlock()
		return false
	}
	n := int64(len(b))
	var fire *tripwire
	if tw := p.trip; tw != nil && tw.who == lk.who {
		n = min(n, tw.at-p.sent[lk.who])
		if p.sent[lk.who]+n >= tw.at {
			fire, p.trip = tw, nil
			p.down[lk.who] = true
		}
	}
	p.sent[lk.who] += n
	p.mu.Unlock()
	if _, err := lk.server.Write(b[:n]); err != nil {
		return false
	}
	if fire == nil {
		return true
	}
	if fire.fn != nil {
		fire.fn()
	}
	p.mu.Lock()
	for other := range p.links {
		if other.who == lk.who {
			other.cut()
		}
	}
	delete(p.down, lk.who)
	p.mu.Unlock()
	close(fire.fired)
	return false
}

// readHead reads a connection's first bytes up to the end of the first
// request's headers (at most 16 KiB).
func readHead(c net.Conn) ([]byte, error) {
	var head []byte
	buf := make([]byte, 4<<10)
	for len(head) < 16<<10 && !bytes.Contains(head, []byte("\r\n\r\n")) {
		n, err := c.Read(buf)
		head = append(head, buf[:n]...)
		if err != nil {
			return head, err
		}
	}
	return head, nil
}

// clientOf names the client of a request by its User-Agent, without the
// version: "barge-edgepuller", "barge", "Go-http-client".
func clientOf(head []byte) string {
	for _, line := range strings.Split(string(head), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(k, "User-Agent") {
			continue
		}
		v = strings.TrimSpace(v)
		if i := strings.IndexAny(v, "/ "); i >= 0 {
			v = v[:i]
		}
		return v
	}
	return "unknown"
}
