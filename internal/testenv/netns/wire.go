package netns

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// Shape is what one direction of a wire does to packets, as tc's tbf and
// netem would: a rate with a bounded queue, a fixed one-way delay and
// random loss.
type Shape struct {
	// Rate is in bits per second; 0 means unlimited.
	Rate int64
	// Delay is added to every packet after it leaves the queue.
	Delay time.Duration
	// Loss is the probability (0 to 1) that a packet is dropped.
	Loss float64
	// Queue bounds the backlog waiting for the rate, in time at Rate: a
	// packet arriving when the backlog exceeds it is dropped (tail drop),
	// as tbf's latency parameter does. If <= 0, 100ms is used.
	Queue time.Duration
}

// Device is one end of a wire: each Read returns one IP packet, each
// Write sends one (a TUN device opened by OpenTUN).
type Device interface {
	io.ReadWriter
}

// Wire carries IP packets between a cloud device and a site device, in
// each direction through its own queue: Down (cloud to site) and Up.
type Wire struct {
	Down, Up *Pipe
	stop     chan struct{}
	wg       sync.WaitGroup
}

// NewWire starts moving packets between cloud and site with no shaping.
// Close stops it; closing the devices is the caller's.
func NewWire(cloud, site Device) *Wire {
	w := &Wire{Down: newPipe(), Up: newPipe(), stop: make(chan struct{})}
	w.run(cloud, site, w.Down)
	w.run(site, cloud, w.Up)
	return w
}

// SetShape shapes both directions alike.
func (w *Wire) SetShape(s Shape) {
	w.Down.SetShape(s)
	w.Up.SetShape(s)
}

// SetCut drops every packet in both directions while cut is true: the
// uplink's cable pulled, with no error sent to either end.
func (w *Wire) SetCut(cut bool) {
	w.Down.SetCut(cut)
	w.Up.SetCut(cut)
}

// Close stops the wire's goroutines that deliver packets; a reader blocked
// on its device ends when the device is closed.
func (w *Wire) Close() {
	close(w.stop)
	w.Down.wake()
	w.Up.wake()
}

func (w *Wire) run(from, to Device, p *Pipe) {
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := from.Read(buf)
			if err != nil {
				if errors.Is(err, io.EOF) || isClosed(w.stop) {
					return
				}
				select {
				case <-w.stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			p.offer(append([]byte(nil), buf[:n]...), time.Now())
		}
	}()
	go func() {
		for {
			pkts, wait := p.due(time.Now())
			for _, pkt := range pkts {
				to.Write(pkt)
			}
			if len(pkts) > 0 {
				continue
			}
			var timer <-chan time.Time
			if wait > 0 {
				timer = time.After(wait)
			}
			select {
			case <-w.stop:
				return
			case <-p.wakeup:
			case <-timer:
			}
		}
	}()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Pipe is one direction of a wire.
type Pipe struct {
	mu     sync.Mutex
	shape  Shape
	cut    bool
	free   time.Time // when the rate's serializer has sent what is queued
	queue  []pending
	wakeup chan struct{}
	rand   *rand.Rand

	sent    map[flow]int64 // TCP payload bytes offered to the pipe
	fresh   map[flow]int64 // of which never sent before on their connection
	highest map[conn]uint32
	dropped map[string]int64
}

type pending struct {
	at  time.Time
	pkt []byte
}

// flow is a source and destination address pair.
type flow struct{ src, dst netip.Addr }

// conn is one direction of a TCP connection.
type conn struct {
	src, dst netip.AddrPort
}

func newPipe() *Pipe {
	return &Pipe{wakeup: make(chan struct{}, 1), rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		sent: map[flow]int64{}, fresh: map[flow]int64{}, highest: map[conn]uint32{}, dropped: map[string]int64{}}
}

// SetShape changes the shape for packets from now on; queued packets keep
// the times they were given.
func (p *Pipe) SetShape(s Shape) {
	if s.Queue <= 0 {
		s.Queue = 100 * time.Millisecond
	}
	p.mu.Lock()
	p.shape = s
	p.mu.Unlock()
}

// SetCut drops every packet from now on while cut is true, queued ones
// included.
func (p *Pipe) SetCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	if cut {
		p.dropped["cut"] += int64(len(p.queue))
		p.queue = nil
	}
	p.mu.Unlock()
}

// Sent is the TCP payload bytes that src sent into the pipe (to any
// destination when dst is invalid), dropped packets and retransmissions
// included: what src put on the link.
func (p *Pipe) Sent(src, dst netip.Addr) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for f, b := range p.sent {
		if f.src == src && (!dst.IsValid() || f.dst == dst) {
			n += b
		}
	}
	return n
}

// Fresh is the part of Sent past the highest sequence number each TCP
// connection had sent before: what src's application wrote, each byte
// once, whatever TCP had to resend.
func (p *Pipe) Fresh(src, dst netip.Addr) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for f, b := range p.fresh {
		if f.src == src && (!dst.IsValid() || f.dst == dst) {
			n += b
		}
	}
	return n
}

// Dropped is the packets dropped by reason: "loss", "queue", "cut".
func (p *Pipe) Dropped() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int64{}
	for k, v := range p.dropped {
		out[k] = v
	}
	return out
}

// offer counts pkt and queues it, or drops it.
func (p *Pipe) offer(pkt []byte, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seg, ok := parseTCP(pkt); ok {
		p.count(seg)
	}
	s := p.shape
	switch {
	case p.cut:
		p.dropped["cut"]++
		return
	case s.Loss > 0 && p.rand.Float64() < s.Loss:
		p.dropped["loss"]++
		return
	}
	at := now
	if s.Rate > 0 {
		if p.free.Before(now) {
			p.free = now
		}
		if p.free.Sub(now) > s.Queue {
			p.dropped["queue"]++
			return
		}
		p.free = p.free.Add(time.Duration(int64(len(pkt)) * 8 * int64(time.Second) / s.Rate))
		at = p.free
	}
	p.queue = append(p.queue, pending{at: at.Add(s.Delay), pkt: pkt})
	if len(p.queue) == 1 {
		p.wake()
	}
}

func (p *Pipe) wake() {
	select {
	case p.wakeup <- struct{}{}:
	default:
	}
}

// due takes the packets whose time has come, or says how long until the
// next one (0: none queued).
func (p *Pipe) due(now time.Time) ([][]byte, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := 0
	for i < len(p.queue) && !p.queue[i].at.After(now) {
		i++
	}
	if i == 0 {
		if len(p.queue) == 0 {
			return nil, 0
		}
		return nil, p.queue[0].at.Sub(now)
	}
	out := make([][]byte, i)
	for j := range out {
		out[j] = p.queue[j].pkt
	}
	p.queue = append(p.queue[:0:0], p.queue[i:]...)
	return out, 0
}

// segment is what the counters need of a TCP packet.
type segment struct {
	conn    conn
	seq     uint32
	syn     bool
	payload int
}

func (s segment) flow() flow { return flow{s.conn.src.Addr(), s.conn.dst.Addr()} }

// count adds a segment to the counters; bytes are fresh when they extend
// the connection's highest sequence number (modulo 2^32).
func (p *Pipe) count(s segment) {
	f := s.flow()
	p.sent[f] += int64(s.payload)
	start := s.seq
	if s.syn {
		start++
	}
	end := start + uint32(s.payload)
	high, known := p.highest[s.conn]
	if !known || s.syn {
		high = start
	}
	if d := int32(end - high); d > 0 {
		p.fresh[f] += int64(min(int64(d), int64(s.payload)))
		high = end
	}
	p.highest[s.conn] = high
}

// parseTCP reads an IPv4 TCP packet's connection, sequence number and
// payload length.
func parseTCP(pkt []byte) (segment, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != 6 {
		return segment{}, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < 20 || total > len(pkt) || total < ihl+20 {
		return segment{}, false
	}
	tcp := pkt[ihl:total]
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || len(tcp) < doff {
		return segment{}, false
	}
	src, _ := netip.AddrFromSlice(pkt[12:16])
	dst, _ := netip.AddrFromSlice(pkt[16:20])
	return segment{
		conn: conn{netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4]))},
		seq:  binary.BigEndian.Uint32(tcp[4:8]), syn: tcp[13]&0x02 != 0, payload: len(tcp) - doff,
	}, true
}
