package schedule

// maxScore is the most a score plugin gives a machine.
const maxScore = 100

// A filter says why machine m cannot take the cycle's pod, or nil if it
// can.
type filter func(c *cycle, m *machineState) []string

// filters run in kube-scheduler's order; the first to object decides a
// machine's reasons.
var filters = []filter{
	readyFilter,
	unschedulableFilter,
	taintFilter,
	nodeAffinityFilter,
	portsFilter,
	resourcesFilter,
	spreadFilter,
	interPodFilter,
}

// A scorer writes a score of 0..maxScore for each feasible machine into out
// (which starts zeroed).
type scorer struct {
	weight int64
	score  func(c *cycle, feasible []*machineState, out []int64)
}

// scorers carry kube-scheduler's default weights.
var scorers = []scorer{
	{3, taintScore},
	{2, nodeAffinityScore},
	{2, spreadScore},
	{2, interPodScore},
	{1, leastAllocatedScore},
	{1, balancedAllocationScore},
}

// cycle is the scheduling of one pod: the pod, the state it is scheduled
// against, and what the filters work out once for all machines.
type cycle struct {
	s        *state
	pod      *podInfo
	spread   spreadState
	interPod interPodState
	// nodeOK caches the pod's node selector and affinity per machine:
	// 0 unknown, 1 match, 2 no match.
	nodeOK []uint8
}

func newCycle(s *state, p *podInfo) *cycle {
	c := &cycle{s: s, pod: p}
	c.spread = newSpreadState(c)
	c.interPod = newInterPodState(s, p)
	return c
}

// nodeMatches says whether m satisfies the pod's nodeSelector and required
// node affinity, remembering the answer for the rest of the cycle.
func (c *cycle) nodeMatches(m *machineState) bool {
	if c.nodeOK == nil {
		c.nodeOK = make([]uint8, len(c.s.machines))
	}
	switch c.nodeOK[m.index] {
	case 1:
		return true
	case 2:
		return false
	}
	ok := c.pod.node.matches(m)
	c.nodeOK[m.index] = 2
	if ok {
		c.nodeOK[m.index] = 1
	}
	return ok
}

func (c *cycle) filter(m *machineState) []string {
	for _, f := range filters {
		if reasons := f(c, m); len(reasons) > 0 {
			return reasons
		}
	}
	return nil
}

// score returns the weighted total of every scorer for each feasible
// machine.
func (c *cycle) score(feasible []*machineState) []int64 {
	total := make([]int64, len(feasible))
	buf := make([]int64, len(feasible))
	for _, sc := range scorers {
		clear(buf)
		sc.score(c, feasible, buf)
		for i, v := range buf {
			total[i] += sc.weight * v
		}
	}
	return total
}

// readyFilter turns away machines whose agent is not ready.
func readyFilter(_ *cycle, m *machineState) []string {
	if !m.ready {
		return []string{"machine not ready"}
	}
	return nil
}

// normalize scales scores so the highest is maxScore, as kube-scheduler's
// DefaultNormalizeScore; with reverse, the highest becomes 0 and the
// lowest maxScore.
func normalize(scores []int64, reverse bool) {
	var hi int64
	for _, s := range scores {
		hi = max(hi, s)
	}
	for i, s := range scores {
		switch {
		case hi == 0 && reverse:
			scores[i] = maxScore
		case hi == 0:
		case reverse:
			scores[i] = maxScore - maxScore*s/hi
		default:
			scores[i] = maxScore * s / hi
		}
	}
}

// normalizeMinMax scales scores linearly so the lowest is 0 and the
// highest maxScore; all equal scores become 0.
func normalizeMinMax(scores []int64) {
	if len(scores) == 0 {
		return
	}
	lo, hi := scores[0], scores[0]
	for _, s := range scores {
		lo, hi = min(lo, s), max(hi, s)
	}
	for i, s := range scores {
		if hi > lo {
			scores[i] = int64(float64(maxScore) * float64(s-lo) / float64(hi-lo))
		} else {
			scores[i] = 0
		}
	}
}
