package live

import (
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

func TestFingerprints(t *testing.T) {
	base := func() []Observed {
		return []Observed{
			{Machine: "m1", Reachable: true, Node: api.NodeInfo{Generation: 3, DesiredDigest: "d1", Usage: nil},
				Pods: []api.PodStatus{
					{Namespace: "default", Name: "a", UID: "u1", Hash: "h1", Phase: "Running", Ready: true},
					{Namespace: "default", Name: "b", UID: "u2", Hash: "h1", Phase: "Running", Ready: true},
				}},
			{Machine: "m2", Reachable: false, Err: "dial: refused"},
		}
	}
	want := Fingerprints(base())
	if len(want) != 2 || want["m1"] == "" || want["m2"] == "" {
		t.Fatalf("fingerprints = %v, want one per machine", want)
	}

	// Order of pods, error texts and figures that do not change a plan
	// leave the fingerprint alone.
	same := base()
	same[0].Pods[0], same[0].Pods[1] = same[0].Pods[1], same[0].Pods[0]
	same[0].Pods[0].StartedAt = time.Unix(100, 0)
	same[0].Pods[0].ContainerStatuses = []api.ContainerStatus{{Name: "c", RestartCount: 4}}
	same[1].Err = "dial: timeout"
	if got := Fingerprints(same); got["m1"] != want["m1"] || got["m2"] != want["m2"] {
		t.Errorf("fingerprints changed with nothing a plan reads: %v, want %v", got, want)
	}

	for name, change := range map[string]func(o []Observed){
		"readiness":   func(o []Observed) { o[0].Pods[1].Ready = false },
		"terminating": func(o []Observed) { o[0].Pods[1].Terminating = true },
		"generation":  func(o []Observed) { o[0].Node.Generation = 4 },
		"digest":      func(o []Observed) { o[0].Node.DesiredDigest = "d2" },
		"pod gone":    func(o []Observed) { o[0].Pods = o[0].Pods[:1] },
		"uid":         func(o []Observed) { o[0].Pods[0].UID = "u9" },
		"phase":       func(o []Observed) { o[0].Pods[0].Phase = "Failed" },
		"unreachable": func(o []Observed) { o[0].Reachable = false },
	} {
		o := base()
		change(o)
		if got := Fingerprints(o); got["m1"] == want["m1"] {
			t.Errorf("%s: fingerprint of m1 did not change", name)
		}
	}
}
