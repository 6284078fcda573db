package live

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
)

// Fingerprints condense what each machine reported into one digest per
// machine, over what a pass plans from: whether it answered, the pod set
// it holds (generation and digest), and each pod's identity, phase and
// readiness. Two observations with the same fingerprints give the same
// pass (at the same time and memory); a saved plan uses them to refuse to
// apply against a fleet that changed since it was made. Figures that move
// without changing a plan (usage, restart counts of a running container,
// start times) are left out.
func Fingerprints(obs []Observed) map[string]string {
	type pod struct {
		Key, UID, Hash, Phase string
		Ready, Terminating    bool
	}
	type machine struct {
		Reachable  bool
		Generation int64
		Digest     string
		Pods       []pod
	}
	out := make(map[string]string, len(obs))
	for _, o := range obs {
		m := machine{Reachable: o.Reachable}
		if o.Reachable {
			m.Generation, m.Digest = o.Node.Generation, o.Node.DesiredDigest
			for _, p := range o.Pods {
				m.Pods = append(m.Pods, pod{p.Namespace + "/" + p.Name, p.UID, p.Hash, string(p.Phase), p.Ready, p.Terminating})
			}
			slices.SortFunc(m.Pods, func(a, b pod) int { return strings.Compare(a.Key, b.Key) })
		}
		b, _ := json.Marshal(m) // plain strings and bools: cannot fail
		sum := sha256.Sum256(b)
		out[o.Machine] = hex.EncodeToString(sum[:12])
	}
	return out
}
