package nft

import (
	"context"
	"testing"
)

func BenchmarkCompile(b *testing.B) {
	d := many(10000, 10)
	b.ResetTimer()
	for range b.N {
		if _, err := Compile("berth", d); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFull(b *testing.B, n, k int) {
	ns := newNetns(b, "bfull")
	s := ns.syncer(b)
	d := many(n, k)
	b.ResetTimer()
	for range b.N {
		s.synced = false // force the full rebuild
		if err := s.Sync(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st := s.LastSync()
	b.ReportMetric(float64(st.Compile.Microseconds())/1000, "compile-ms")
	b.ReportMetric(float64(st.Kernel.Microseconds())/1000, "kernel-ms")
}

func BenchmarkFullSync2000x5(b *testing.B) { benchFull(b, 2000, 5) }
