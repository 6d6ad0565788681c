//go:build linux

package lab

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"
)

// echo serves lines back on loopback.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write(append(sc.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line and waits up to d for it back.
func roundTrip(c net.Conn, br *bufio.Reader, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := br.ReadString('\n')
	if err == nil && line != "ping\n" {
		err = errors.New("echoed " + line)
	}
	return err
}

// The relay passes bytes, freezes open connections without closing them
// while new ones pass, thaws them, refuses and resumes on the same
// address.
func TestRelay(t *testing.T) {
	r, err := newRelay(echo(t), func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) },
		(&net.Dialer{}).DialContext, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", r.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	old, oldR := dial()
	if err := roundTrip(old, oldR, 5*time.Second); err != nil {
		t.Fatalf("through the relay: %v", err)
	}
	r.Freeze()
	if err := roundTrip(old, oldR, 300*time.Millisecond); err == nil {
		t.Fatal("a frozen connection still passes bytes")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("a frozen connection ended with %v, want nothing but silence", err)
	}
	fresh, freshR := dial()
	if err := roundTrip(fresh, freshR, 5*time.Second); err != nil {
		t.Fatalf("a new connection while others are frozen: %v", err)
	}

	// Thawed, the frozen connection delivers what it held.
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	old.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := oldR.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("a thawed connection: %q, %v", line, err)
	}
	if err := roundTrip(old, oldR, 5*time.Second); err != nil {
		t.Fatalf("a thawed connection: %v", err)
	}

	if err := r.Refuse(); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(fresh, freshR, 5*time.Second); err == nil {
		t.Error("a connection survived Refuse")
	}
	if c, err := net.Dial("tcp", r.Addr); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted while refusing")
	}

	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	again, againR := dial()
	if err := roundTrip(again, againR, 5*time.Second); err != nil {
		t.Fatalf("after Resume: %v", err)
	}
}

// The relay counts what it passes each way: an echo sends back exactly
// what it was sent.
func TestRelayBytes(t *testing.T) {
	r, err := newRelay(echo(t), func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) },
		(&net.Dialer{}).DialContext, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for range 3 {
		if err := roundTrip(c, br, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Each round trip is read back in full before the next: the counts
	// are final.
	if in, out := r.Bytes(); in != 15 || out != 15 {
		t.Errorf("Bytes() = %d to the client, %d to the server; want 15 and 15", in, out)
	}
}
