package nft

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/google/nftables"
)

// primed is a Syncer whose mirror holds d, as after a successful Sync, with
// a connection that is never dialled (nothing to send).
func primed(tb testing.TB, d *Desired) *Syncer {
	tb.Helper()
	conn, err := nftables.New()
	if err != nil {
		tb.Fatal(err)
	}
	s := &Syncer{log: slog.New(slog.NewTextHandler(io.Discard, nil)), conn: conn,
		table: &nftables.Table{Name: "t", Family: nftables.TableFamilyIPv4}, services: map[serviceKey]*svcState{},
		owners: map[string]serviceKey{}, shared: map[string]*sharedElem{}, refs: map[feature]int{}}
	s.opts, s.synced = optionsOf(d), true
	for i := range d.Services {
		in := &d.Services[i]
		f, err := compileService(in, s.opts, nil)
		if err != nil {
			tb.Fatal(err)
		}
		s.services[in.key()] = &svcState{in: in.clone(), frag: f}
		for _, c := range f.claims {
			s.owners[c] = in.key()
		}
		for _, ft := range f.features {
			s.refs[ft]++
		}
		for _, e := range f.shared {
			id := elemID(e.set, e.Key)
			if s.shared[id] == nil {
				s.shared[id] = &sharedElem{setElem: e}
			}
			s.shared[id].n++
		}
	}
	s.counts, s.sizes = map[string]int{}, map[string]uint32{}
	for _, v := range s.services {
		for _, e := range v.frag.elems {
			s.counts[e.set]++
		}
	}
	ft := featuresOf(s.refs)
	ft.sizes = s.sizes
	for _, set := range sizedSets {
		s.sizes[set] = sizeFor(s.counts[set])
	}
	global, err := compileGlobal(d, ft)
	if err != nil {
		tb.Fatal(err)
	}
	s.global = global
	return s
}

// TestSyncWithoutChangeSendsNothing: a Sync of what the mirror holds plans
// nothing (the connection here cannot send anything: it would fail).
func TestSyncWithoutChangeSendsNothing(t *testing.T) {
	d := many(50, 3)
	s := primed(t, d)
	if err := s.Sync(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.ServicesChanged != 0 || st.Full || st.RulesAdded+st.ElementsAdded+st.ChainsDeleted != 0 {
		t.Errorf("%+v", st)
	}
}

// BenchmarkSyncUnchanged is the Go side of a Sync of 10,000 services x 10
// endpoints when nothing changed: comparing each service with the mirror.
func BenchmarkSyncUnchanged(b *testing.B) {
	d := many(10000, 10)
	s := primed(b, d)
	b.ResetTimer()
	c0 := cpuTime()
	for range b.N {
		if err := s.Sync(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime()-c0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
