package nft

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// The benchmarks need root (a network namespace of their own); run them
// with -count 5 and report the medians:
//
//	go test -run XXX -bench . -benchtime 1x -count 5 ./nodes/nft

// BenchmarkCompile is the pure compile of 10,000 services x 10 endpoints,
// printable form included (assemble and sort).
func BenchmarkCompile(b *testing.B) {
	d := many(10000, 10)
	b.ResetTimer()
	for range b.N {
		if _, err := Compile("berth", d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileFragments is what a Syncer compiles on a full sync: the
// per-service fragments, without the printable assembly.
func BenchmarkCompileFragments(b *testing.B) {
	d := many(10000, 10)
	o := optionsOf(d)
	b.ResetTimer()
	for range b.N {
		compileGlobal(d)
		for i := range d.Services {
			if _, err := compileService(&d.Services[i], o); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkFullSync rebuilds the table of 10,000 services x 10 endpoints
// (compile, diff against nothing, one batch).
func BenchmarkFullSync(b *testing.B) {
	ns := newNetns(b, "bfull")
	s := ns.syncer(b)
	d := many(10000, 10)
	ctx := context.Background()
	var compile, kernel time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s.synced, s.services, s.global = false, map[serviceKey]*svcState{}, nil // forget everything
		b.StartTimer()
		if err := s.Sync(ctx, d); err != nil {
			b.Fatal(err)
		}
		st := s.LastSync()
		compile += st.Compile
		kernel += st.Kernel
	}
	b.ReportMetric(float64(compile.Microseconds())/1000/float64(b.N), "compile-ms/op")
	b.ReportMetric(float64(kernel.Microseconds())/1000/float64(b.N), "kernel-ms/op")
}

// BenchmarkOneEndpointChange changes one endpoint of one service among
// 10,000 services x 10 endpoints: the whole desired state is passed, as the
// agent does.
func BenchmarkOneEndpointChange(b *testing.B) {
	ns := newNetns(b, "bone")
	s := ns.syncer(b)
	d := many(10000, 10)
	ctx := context.Background()
	if err := s.Sync(ctx, d); err != nil {
		b.Fatal(err)
	}
	ips := []netip.Addr{addr("198.18.200.1"), addr("198.18.200.2")}
	b.ResetTimer()
	for i := range b.N {
		d.Services[5000].Endpoints[3].IP = ips[i%2]
		if err := s.Sync(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st := s.LastSync(); st.Full || st.ServicesChanged != 1 || st.ChainsAdded != 1 || st.ChainsDeleted != 1 {
		b.Errorf("not a one-endpoint delta: %+v", st)
	}
}
