package ingress

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestUpdateUnderLoadLosesNothing runs a rolling update behind an Ingress
// while clients keep sending requests: endpoints are added and removed
// with Update, removed backends are stopped after their removal (as the
// controller orders it), one backend is stopped while still listed, and a
// listed address refuses connections. No request may fail.
func TestUpdateUnderLoadLosesNothing(t *testing.T) {
	p := startProxy(t, Options{Logger: testLoggerAt(t, false)})
	var (
		mu       sync.Mutex
		live     []*testBackendServer
		failures []string
		total    atomic.Int64
	)
	publish := func(extra ...netip.AddrPort) {
		var eps []netip.AddrPort
		for _, b := range live {
			eps = append(eps, b.addr())
		}
		if w := p.Update(ingressFor("load.example", append(eps, extra...)...)); len(w) != 0 {
			t.Errorf("warnings: %v", w)
		}
	}
	gen := 0
	start := func() *testBackendServer {
		gen++
		b := newSlowishBackend(t, fmt.Sprintf("gen%d", gen))
		live = append(live, b)
		return b
	}
	for range 3 {
		start()
	}
	publish()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 30 * time.Second}
			defer client.CloseIdleConnections()
			methods := []string{http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodGet}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := methods[(w+i)%len(methods)]
				req, _ := http.NewRequest(m, p.httpURL+"/item", nil)
				req.Host = "load.example"
				res, err := client.Do(req)
				total.Add(1)
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %v", m, err))
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: status %d", m, res.StatusCode))
					mu.Unlock()
				}
			}
		}()
	}

	// let waits for some requests to complete, so that traffic flows
	// through every step whatever the machine's load.
	let := func() {
		for n := total.Load() + 16; total.Load() < n; {
			time.Sleep(5 * time.Millisecond)
		}
	}
	let()
	for round := range 6 {
		// Surge: a new endpoint joins.
		start()
		publish()
		let()
		// The oldest leaves the Ingress, then stops.
		old := live[0]
		live = live[1:]
		publish()
		let()
		old.Close()
		switch round {
		case 2:
			// A backend stops while still listed: its connections are
			// refused and retried elsewhere until the next Update.
			live[0].Close()
			let()
			live = live[1:]
			start()
			publish()
		case 4:
			// A listed address where nothing listens.
			publish(refusedAddr(t))
			let()
			publish()
		}
		let()
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during the updates, first: %v", len(failures), total.Load(), failures[:min(5, len(failures))])
	}
	for _, b := range live {
		if b.hits.Load() == 0 {
			t.Errorf("endpoint %s that joined got no request", b.name)
		}
	}
	t.Logf("%d requests over %d backend generations", total.Load(), gen)
}

// newSlowishBackend is a backend whose answers take a millisecond, so
// that requests are in flight when endpoints change.
func newSlowishBackend(t *testing.T, name string) *testBackendServer {
	return newBackendServerWith(t, name, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Millisecond)
			h.ServeHTTP(w, r)
		})
	})
}
