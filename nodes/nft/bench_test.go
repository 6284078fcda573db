package nft

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user and system time: the kernel's work on a
// batch is system time of the sending thread, and unlike wall time it does
// not grow when other work shares the machine.
func cpuTime() time.Duration {
	u, s := cpuTimes()
	return u + s
}

// cpuTimes is the process's user and system time apart.
func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// The benchmarks need root (a network namespace of their own); run them
// with -count 5 and report the medians (each line takes a few seconds):
//
//	go test -run XXX -bench FullSync -benchtime 3x -count 5 ./nodes/nft
//	go test -run XXX -bench OneEndpointChange -benchtime 300x -count 5 ./nodes/nft
//	go test -run XXX -bench Connect -benchtime 3000x -count 5 ./nodes/nft

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
		if _, err := compileGlobal(d, features{}); err != nil {
			b.Fatal(err)
		}
		for i := range d.Services {
			if _, err := compileService(&d.Services[i], o, nil); err != nil {
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
	var compile, kernel, cpu, sys time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s.synced, s.services, s.global = false, map[serviceKey]*svcState{}, nil // forget everything
		b.StartTimer()
		u0, s0 := cpuTimes()
		if err := s.Sync(ctx, d); err != nil {
			b.Fatal(err)
		}
		u1, s1 := cpuTimes()
		cpu += u1 - u0 + s1 - s0
		sys += s1 - s0
		st := s.LastSync()
		compile += st.Compile
		kernel += st.Kernel
	}
	b.ReportMetric(float64(compile.Microseconds())/1000/float64(b.N), "compile-ms/op")
	b.ReportMetric(float64(kernel.Microseconds())/1000/float64(b.N), "kernel-ms/op")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(sys.Microseconds())/1000/float64(b.N), "sys-ms/op")
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
	var compile, kernel, cpu, sys time.Duration
	b.ResetTimer()
	for i := range b.N {
		d.Services[5000].Endpoints[3].IP = ips[i%2]
		u0, s0 := cpuTimes()
		if err := s.Sync(ctx, d); err != nil {
			b.Fatal(err)
		}
		u1, s1 := cpuTimes()
		cpu += u1 - u0 + s1 - s0
		sys += s1 - s0
		compile += s.LastSync().Compile
		kernel += s.LastSync().Kernel
	}
	b.StopTimer()
	b.ReportMetric(float64(compile.Microseconds())/1000/float64(b.N), "compile-ms/op")
	b.ReportMetric(float64(kernel.Microseconds())/1000/float64(b.N), "kernel-ms/op")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(sys.Microseconds())/1000/float64(b.N), "sys-ms/op")
	if st := s.LastSync(); st.Full || st.ServicesChanged != 1 || st.ElementsAdded != 1 || st.ElementsDeleted != 1 || st.RulesAdded != 0 {
		b.Errorf("not a one-endpoint delta: %+v", st)
	}
}

// BenchmarkConnect times a TCP connect to a ClusterIP through the DNAT
// (a new connection each time, so each is a first packet) with 100 and
// with 10,000 services in the table.
func BenchmarkConnect(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			l := newLab(b)
			s := l.router.syncer(b)
			// One endpoint each: what matters is the number of services
			// the lookup runs among.
			d := many(n, 1)
			svc := &d.Services[n/2]
			svc.Endpoints = []Endpoint{ep("198.18.16.2", 8080, true, true)}
			if err := s.Sync(context.Background(), d); err != nil {
				b.Fatal(err)
			}
			target := netip.AddrPortFrom(svc.ClusterIPs[0], 80).String()
			b.ResetTimer()
			l.client.do(b, func() error {
				for range b.N {
					c, err := net.DialTimeout("tcp4", target, 2*time.Second)
					if err != nil {
						return err
					}
					c.Close()
				}
				return nil
			})
		})
	}
}
