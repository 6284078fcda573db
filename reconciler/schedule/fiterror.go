package schedule

import (
	"slices"
	"strconv"
	"strings"
)

// FitError says why a pod could not be placed.
type FitError struct {
	// Pod is the pod that was not placed.
	Pod PodKey
	// Message is one line for people, in kube-scheduler's form:
	// "0/3 machines are available: 2 insufficient memory, 1 untolerated
	// taint {dedicated: gpu}." Reasons are counted over machines and listed
	// by count, most frequent first, then alphabetically.
	Message string
	// PerMachine holds, for each machine that was considered, the reasons
	// it was turned away: those of the first filter that objected (a
	// machine short of both cpu and memory has both).
	PerMachine map[string][]string
}

// Error returns the message.
func (e *FitError) Error() string { return e.Message }

func newFitError(pod PodKey, machines int, perMachine map[string][]string) *FitError {
	counts := map[string]int{}
	for _, reasons := range perMachine {
		for _, r := range reasons {
			counts[r]++
		}
	}
	type reasonCount struct {
		reason string
		n      int
	}
	list := make([]reasonCount, 0, len(counts))
	for r, n := range counts {
		list = append(list, reasonCount{r, n})
	}
	slices.SortFunc(list, func(a, b reasonCount) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return strings.Compare(a.reason, b.reason)
	})
	var b strings.Builder
	b.WriteString("0/")
	b.WriteString(strconv.Itoa(machines))
	b.WriteString(" machines are available")
	if machines == 0 {
		b.WriteString(": the fleet has no machines")
	}
	for i, rc := range list {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(rc.n))
		b.WriteByte(' ')
		b.WriteString(rc.reason)
	}
	b.WriteByte('.')
	return &FitError{Pod: pod, Message: b.String(), PerMachine: perMachine}
}
