// Package faultproxy is a TCP proxy on 127.0.0.1 that a test puts between
// ehrport and a real server to break the network on purpose: latency on
// every chunk, connections reset, a stall part-way through a response, or
// a response cut short. It works below TLS, so the client sees exactly what
// a bad network does to an encrypted connection (a reset, a read that never
// returns, an unexpected EOF), and the server is untouched.
//
// Which connections break is drawn from a seeded random source, so a
// failing run can be replayed with the seed it logged.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Kind is how a connection breaks.
type Kind int

const (
	// None forwards everything (Latency still applies).
	None Kind = iota
	// Reset aborts both sides with a TCP RST after the chosen byte.
	Reset
	// Stall stops forwarding in the chosen direction after the chosen
	// byte, keeping the connection open until a side closes it or the
	// proxy is closed or healed: a server that hangs mid-response.
	Stall
	// Truncate closes both sides cleanly (FIN) after the chosen byte: a
	// body cut short.
	Truncate
)

func (k Kind) String() string {
	switch k {
	case Reset:
		return "reset"
	case Stall:
		return "stall"
	case Truncate:
		return "truncate"
	}
	return "none"
}

// Direction is the byte stream a break counts and cuts.
type Direction int

const (
	// Down is server to client: responses (downloads).
	Down Direction = iota
	// Up is client to server: requests (uploads).
	Up
)

// Fault says what happens to connections accepted from now on.
type Fault struct {
	// Latency delays every chunk forwarded, both ways.
	Latency time.Duration
	// Break is what happens to a chosen connection; Dir the stream it
	// counts and cuts.
	Break Kind
	Dir   Direction
	// The break comes after a number of bytes drawn from [AfterMin,
	// AfterMax] in Dir (TLS handshakes count too: a few KB).
	AfterMin, AfterMax int64
	// Prob is the chance that a new connection is chosen (0 means 1).
	Prob float64
	// Limit caps the breaks injected under this Fault (0: no cap).
	Limit int
}

// Stats count what the proxy did.
type Stats struct {
	Conns    int // connections accepted
	Injected int // breaks that happened (bytes reached the chosen point)
}

// Proxy forwards 127.0.0.1:port to one target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	fault  Fault
	gen    int // incremented by Set, so Limit counts per Fault
	broken int // breaks under the current Fault
	rng    *rand.Rand
	stats  Stats
	links  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New listens on a free port of 127.0.0.1 and forwards to target
// (host:port). seed makes the choice of broken connections reproducible.
func New(target string, seed uint64) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set replaces the fault for connections accepted from now on. Connections
// already open keep the fault they were given, except that a Stall ends
// (the connection is closed) when the fault is healed with Set(Fault{}).
func (p *Proxy) Set(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
	p.gen++
	p.broken = 0
	if f.Break != Stall {
		for l := range p.links {
			if l.stalled() {
				l.close(false)
			}
		}
	}
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// CloseConns closes every open connection (a server restart, seen from
// the client), without changing the fault.
func (p *Proxy) CloseConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.close(false)
	}
}

// Close stops accepting, closes every connection and waits for the
// forwarding goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for l := range p.links {
		l.close(false)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.stats.Conns++
		f := p.fault
		at := int64(-1)
		if f.Break != None && (f.Limit == 0 || p.broken < f.Limit) && (f.Prob <= 0 || p.rng.Float64() < f.Prob) {
			at = f.AfterMin
			if f.AfterMax > f.AfterMin {
				at += p.rng.Int64N(f.AfterMax - f.AfterMin + 1)
			}
			// Counted when chosen, so Limit bounds concurrent picks too;
			// Stats.Injected counts only breaks that happened.
			p.broken++
		}
		l := &link{p: p, client: c, fault: f, at: at, gen: p.gen}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go l.run()
	}
}

// link is one proxied connection.
type link struct {
	p              *Proxy
	client, server net.Conn
	fault          Fault
	at             int64 // byte offset of the break in fault.Dir; -1: none
	gen            int

	mu       sync.Mutex
	isStall  bool
	done     bool
	stallEnd chan struct{}
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer func() {
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	}()
	server, err := net.DialTimeout("tcp", l.p.target, 5*time.Second)
	if err != nil {
		// The server is down: the client sees its connection reset, as it
		// would connecting to a dead host through a load balancer.
		resetConn(l.client)
		return
	}
	l.mu.Lock()
	l.server = server
	l.stallEnd = make(chan struct{})
	if l.done {
		l.mu.Unlock()
		server.Close()
		l.client.Close()
		return
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pipe(server, l.client, Up) }()
	go func() { defer wg.Done(); l.pipe(l.client, server, Down) }()
	wg.Wait()
	l.close(false)
}

// pipe copies src to dst for one direction, applying the latency and, in
// the fault's direction, the break.
func (l *link) pipe(dst, src net.Conn, dir Direction) {
	buf := make([]byte, 32<<10)
	var n int64
	breakAt := int64(-1)
	if dir == l.fault.Dir {
		breakAt = l.at
	}
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if l.fault.Latency > 0 {
				time.Sleep(l.fault.Latency)
			}
			chunk := buf[:k]
			if breakAt >= 0 && n+int64(k) >= breakAt {
				chunk = buf[:breakAt-n]
				if l.fault.Break == Stall {
					// Stalled before the last bytes go out: a heal (Set)
					// that follows their arrival must find the link
					// stalled, or it would be missed and the stall last
					// for ever.
					l.mu.Lock()
					l.isStall = true
					l.mu.Unlock()
				}
				if len(chunk) > 0 {
					if _, werr := dst.Write(chunk); werr != nil {
						l.close(false)
						return
					}
				}
				l.inject()
				return
			}
			if _, werr := dst.Write(chunk); werr != nil {
				l.close(false)
				return
			}
			n += int64(k)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && !l.stalled() {
				// Half-close: pass the FIN on, keep the other way open.
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					return
				}
			}
			l.close(false)
			return
		}
	}
}

// inject performs the break, once.
func (l *link) inject() {
	l.p.mu.Lock()
	l.p.stats.Injected++
	l.p.mu.Unlock()
	switch l.fault.Break {
	case Reset:
		l.close(true)
	case Truncate:
		l.close(false)
	case Stall:
		// pipe marked the link stalled before the last bytes went out.
		l.mu.Lock()
		end := l.stallEnd
		l.mu.Unlock()
		// Hold the connection: stop reading in this direction until a side
		// or the proxy closes it. The other direction keeps flowing, so
		// the peer cannot tell a stall from a slow server.
		<-end
	}
}

func (l *link) stalled() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.isStall
}

// close ends both sides, with RST when reset is set.
func (l *link) close(reset bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	for _, c := range []net.Conn{l.client, l.server} {
		if c == nil {
			continue
		}
		if reset {
			resetConn(c)
		} else {
			c.Close()
		}
	}
	if l.stallEnd != nil {
		close(l.stallEnd)
	}
}

// resetConn closes c with an RST instead of a FIN.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// String describes the fault for logs.
func (f Fault) String() string {
	s := fmt.Sprintf("latency %s", f.Latency)
	if f.Break != None {
		dir := "down"
		if f.Dir == Up {
			dir = "up"
		}
		s += fmt.Sprintf(", %s %s after %d-%d bytes", f.Break, dir, f.AfterMin, f.AfterMax)
		if f.Prob > 0 {
			s += fmt.Sprintf(", p=%.2f", f.Prob)
		}
		if f.Limit > 0 {
			s += fmt.Sprintf(", at most %d", f.Limit)
		}
	}
	return s
}
