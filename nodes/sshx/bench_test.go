package sshx

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"berth.dev/berth/nodes/sshx/sshtest"
)

// reportLatency reports the median and 99th percentile of ds.
func reportLatency(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	q := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkAgentCall measures one agent API call (GET /v1/version) over a
// reused SSH connection: with a new forwarded channel per call (DialUnix,
// the request, close; how bootstrap calls), and with the HTTP connection,
// and so the channel, kept between calls (how an HTTP client with
// keep-alives calls).
func BenchmarkAgentCall(b *testing.B) {
	s := sshtest.Start(b, sshtest.Options{})
	c := newConn(b, s, Config{})
	sock := serveUnixHTTP(b, filepath.Join(shortTempDir(b), "agent.sock"))
	if err := c.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name      string
		keepAlive bool
	}{{"channel-per-call", false}, {"channel-reused", true}} {
		b.Run(bc.name, func(b *testing.B) {
			hc := &http.Client{Transport: &http.Transport{
				DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return c.DialUnix(ctx, sock) },
				DisableKeepAlives: !bc.keepAlive,
				MaxConnsPerHost:   4,
			}}
			defer hc.CloseIdleConnections()
			ctx := context.Background()
			ds := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/version", nil)
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ds = append(ds, time.Since(start))
			}
			reportLatency(b, ds)
		})
	}
}

// BenchmarkHandshake measures connecting to a machine: TCP connect, SSH
// key exchange, host key check and public key authentication.
func BenchmarkHandshake(b *testing.B) {
	s := sshtest.Start(b, sshtest.Options{})
	m := s.Machine("lab1")
	cfg := Config{Auth: keyAuth(b, s)}
	ds := make([]time.Duration, 0, b.N)
	for b.Loop() {
		c, err := New(m, cfg)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := c.Connect(context.Background()); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
		c.Close()
	}
	reportLatency(b, ds)
}
