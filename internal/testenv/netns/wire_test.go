package netns

import (
	"encoding/binary"
	"io"
	"net/netip"
	"testing"
	"time"
)

// chanDevice is a Device whose reads come from in and whose writes go to
// out, with the time each packet arrived.
type chanDevice struct {
	in  chan []byte
	out chan arrival
}

type arrival struct {
	at  time.Time
	pkt []byte
}

func newChanDevice() *chanDevice {
	return &chanDevice{in: make(chan []byte, 4096), out: make(chan arrival, 4096)}
}

func (d *chanDevice) Read(b []byte) (int, error) {
	pkt, ok := <-d.in
	if !ok {
		return 0, io.EOF
	}
	return copy(b, pkt), nil
}

func (d *chanDevice) Write(b []byte) (int, error) {
	d.out <- arrival{time.Now(), append([]byte(nil), b...)}
	return len(b), nil
}

// tcpPacket is an IPv4 TCP packet of size bytes in all from src to dst.
func tcpPacket(src, dst string, size int) []byte {
	pkt := make([]byte, size)
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:4], uint16(size))
	pkt[9] = 6
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	pkt[20+12] = 5 << 4
	return pkt
}

// send offers n packets of size bytes from cloud to site and collects
// what arrives until quiet has passed without a packet.
func send(t *testing.T, s Shape, n, size int, quiet time.Duration) (start time.Time, got []arrival, w *Wire) {
	t.Helper()
	cloud, site := newChanDevice(), newChanDevice()
	w = NewWire(cloud, site)
	t.Cleanup(func() { w.Close(); close(cloud.in); close(site.in) })
	w.SetShape(s)
	start = time.Now()
	for range n {
		cloud.in <- tcpPacket("10.200.0.1", "10.210.1.11", size)
	}
	for {
		select {
		case a := <-site.out:
			got = append(got, a)
		case <-time.After(quiet):
			return start, got, w
		}
	}
}

func TestWireRate(t *testing.T) {
	// 800 packets of 1250 bytes are 8 Mbit: one second at 8 Mbit/s.
	start, got, w := send(t, Shape{Rate: 8_000_000, Queue: 5 * time.Second}, 800, 1250, 2*time.Second)
	if len(got) != 800 {
		t.Fatalf("%d packets arrived, want 800 (dropped %v)", len(got), w.Down.Dropped())
	}
	// Never faster than the rate; a busy machine may make it slower.
	if took := got[len(got)-1].at.Sub(start); took < 950*time.Millisecond || took > 5*time.Second {
		t.Errorf("8 Mbit at 8 Mbit/s took %s, want about 1s", took)
	}
	if n := w.Down.Sent(netip.MustParseAddr("10.200.0.1"), netip.Addr{}); n != 800*(1250-40) {
		t.Errorf("counted %d TCP payload bytes from 10.200.0.1, want %d", n, 800*(1250-40))
	}
	if n := w.Down.Sent(netip.MustParseAddr("10.200.0.2"), netip.Addr{}); n != 0 {
		t.Errorf("counted %d bytes from 10.200.0.2, which sent none", n)
	}
}

func TestWireDelay(t *testing.T) {
	start, got, _ := send(t, Shape{Delay: 80 * time.Millisecond}, 1, 100, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d packets arrived, want 1", len(got))
	}
	// Never sooner than the delay; a busy machine may make it later.
	if d := got[0].at.Sub(start); d < 80*time.Millisecond || d > 2*time.Second {
		t.Errorf("a packet took %s with an 80ms delay", d)
	}
}

func TestWireQueueTailDrop(t *testing.T) {
	// 1 Mbit/s and a 100ms queue hold 12.5 KB: 11 of a burst of 200
	// packets of 1250 bytes (10 ms each) offered at one instant. The
	// pipe is driven on its own clock, so a busy machine cannot spread
	// the burst out.
	p := newPipe()
	p.SetShape(Shape{Rate: 1_000_000})
	now := time.Now()
	for range 200 {
		p.offer(tcpPacket("10.200.0.1", "10.210.1.11", 1250), now)
	}
	if q := len(p.queue); q != 11 {
		t.Errorf("%d of a burst of 200 queued behind a 100ms queue at 1 Mbit/s, want 11", q)
	}
	if d := p.Dropped()["queue"]; d != 200-int64(len(p.queue)) {
		t.Errorf("dropped %d at the queue, want %d", d, 200-len(p.queue))
	}
	// The queue drains at the rate: 10 ms later one more fits.
	p.offer(tcpPacket("10.200.0.1", "10.210.1.11", 1250), now.Add(10*time.Millisecond))
	if q := len(p.queue); q != 12 {
		t.Errorf("10ms later %d are queued, want 12", q)
	}
}

func TestWireLoss(t *testing.T) {
	_, got, w := send(t, Shape{Loss: 0.5}, 2000, 100, 2*time.Second)
	if len(got) < 800 || len(got) > 1200 {
		t.Errorf("%d of 2000 packets arrived with 50%% loss", len(got))
	}
	if d := w.Down.Dropped()["loss"]; int(d) != 2000-len(got) {
		t.Errorf("dropped %d for loss, want %d", d, 2000-len(got))
	}
}

func TestWireCut(t *testing.T) {
	cloud, site := newChanDevice(), newChanDevice()
	w := NewWire(cloud, site)
	defer func() { w.Close(); close(cloud.in); close(site.in) }()
	// A delay long enough that the first packet is surely still queued
	// when the cut comes, however busy the machine.
	w.SetShape(Shape{Delay: 2 * time.Second})
	cloud.in <- tcpPacket("10.200.0.1", "10.210.1.11", 100) // queued before the cut, dropped by it
	for queued := 0; queued == 0; time.Sleep(time.Millisecond) {
		w.Down.mu.Lock()
		queued = len(w.Down.queue)
		w.Down.mu.Unlock()
	}
	w.SetCut(true)
	cloud.in <- tcpPacket("10.200.0.1", "10.210.1.11", 100)
	site.in <- tcpPacket("10.210.1.11", "10.200.0.1", 100)
	select {
	case a := <-site.out:
		t.Fatalf("a packet of %d bytes crossed a cut wire", len(a.pkt))
	case <-cloud.out:
		t.Fatal("a packet crossed a cut wire upwards")
	case <-time.After(200 * time.Millisecond):
	}
	w.SetCut(false)
	cloud.in <- tcpPacket("10.200.0.1", "10.210.1.11", 100)
	select {
	case <-site.out:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing crossed once the cut ended")
	}
	if d := w.Down.Dropped()["cut"] + w.Up.Dropped()["cut"]; d != 3 {
		t.Errorf("dropped %d packets for the cut, want 3", d)
	}
}

// segmentPacket is an IPv4 TCP packet from 10.200.0.1:5000 to
// 10.210.1.11:40000 with seq and payload bytes of payload.
func segmentPacket(seq uint32, syn bool, payload int) []byte {
	pkt := tcpPacket("10.200.0.1", "10.210.1.11", 40+payload)
	binary.BigEndian.PutUint16(pkt[20:22], 5000)
	binary.BigEndian.PutUint16(pkt[22:24], 40000)
	binary.BigEndian.PutUint32(pkt[24:28], seq)
	if syn {
		pkt[20+13] |= 0x02
	}
	return pkt
}

// Resent segments count in Sent, not in Fresh, across the wrap of the
// sequence number too.
func TestWireFreshBytes(t *testing.T) {
	p := newPipe()
	p.SetShape(Shape{})
	const isn = 1<<32 - 1500 // the data wraps past 2^32
	for _, seg := range []struct {
		seq     uint32
		syn     bool
		payload int
	}{
		{isn, true, 0},
		{isn + 1, false, 1000},
		{isn + 1001, false, 1000}, // wraps
		{isn + 1, false, 1000},    // resent
		{isn + 2001 - 1<<32, false, 500},
		{isn + 2001 - 1<<32, false, 1000}, // the last 500 are new
	} {
		p.offer(segmentPacket(seg.seq, seg.syn, seg.payload), time.Now())
	}
	reg := netip.MustParseAddr("10.200.0.1")
	if got := p.Sent(reg, netip.Addr{}); got != 4500 {
		t.Errorf("Sent = %d, want 4500", got)
	}
	if got := p.Fresh(reg, netip.MustParseAddr("10.210.1.11")); got != 3000 {
		t.Errorf("Fresh = %d, want 3000", got)
	}
}

// FuzzParseTCP: any bytes from a TUN device parse without a panic, into a
// payload that fits the packet.
func FuzzParseTCP(f *testing.F) {
	f.Add(segmentPacket(1, true, 0))
	f.Add(segmentPacket(7, false, 100))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		seg, ok := parseTCP(pkt)
		if ok && (seg.payload < 0 || seg.payload > len(pkt)) {
			t.Fatalf("payload %d of a %d-byte packet", seg.payload, len(pkt))
		}
		p := newPipe()
		p.offer(pkt, time.Now())
	})
}
