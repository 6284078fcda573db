package nft

import (
	"sort"
)

// plan is the difference between two states, as kernel operations.
type plan struct {
	full      bool // a definition changed in place: rebuild instead
	intervals map[string]bool
	newSet    map[string]bool

	addSets   []*Set
	delSets   []*Set
	addChains []*Chain
	rewrite   []*Chain
	delChains []*Chain
	addElems  map[string][]Element
	delElems  map[string][]Element
	refill    map[string][]Element // interval sets, refilled whole
}

// newPlan starts a plan; global names the interval sets (all table-wide).
func newPlan(global *fragment) *plan {
	p := &plan{intervals: map[string]bool{}, newSet: map[string]bool{},
		addElems: map[string][]Element{}, delElems: map[string][]Element{}, refill: map[string][]Element{}}
	for _, s := range global.sets {
		if s.Interval {
			p.intervals[s.Name] = true
		}
	}
	return p
}

// diff adds what turns fragment old into fragment new (either may be nil).
func (p *plan) diff(old, new *fragment) {
	if old == nil {
		old = &fragment{}
	}
	if new == nil {
		new = &fragment{}
	}
	oldSets := make(map[string]*Set, len(old.sets))
	for _, s := range old.sets {
		oldSets[s.Name] = s
	}
	for _, s := range new.sets {
		o := oldSets[s.Name]
		switch {
		case o == nil:
			p.addSets = append(p.addSets, s)
			p.newSet[s.Name] = true
		case !o.sameSpec(s):
			p.full = true
		}
		delete(oldSets, s.Name)
	}
	for _, s := range old.sets {
		if oldSets[s.Name] != nil {
			p.delSets = append(p.delSets, s)
		}
	}

	oldChains := make(map[string]*Chain, len(old.chains))
	for _, c := range old.chains {
		oldChains[c.Name] = c
	}
	for _, c := range new.chains {
		o := oldChains[c.Name]
		switch {
		case o == nil:
			p.addChains = append(p.addChains, c)
		case (o.Base == nil) != (c.Base == nil) || o.Base != nil && *o.Base != *c.Base:
			p.full = true
		case !rulesEqual(o.Rules, c.Rules):
			p.rewrite = append(p.rewrite, c)
		}
		delete(oldChains, c.Name)
	}
	for _, c := range old.chains {
		if oldChains[c.Name] != nil {
			p.delChains = append(p.delChains, c)
		}
	}
	p.diffElems(old.elems, new.elems)
}

// diffElems adds what turns the elements old into new.
func (p *plan) diffElems(old, new []setElem) {
	changedInterval := map[string]bool{}
	if len(old) == 0 {
		// Everything is new (a rebuild, a new Service): no lookups.
		for i := range new {
			e := &new[i]
			if p.intervals[e.set] {
				changedInterval[e.set] = true
				continue
			}
			p.addElems[e.set] = append(p.addElems[e.set], e.Element)
		}
	} else {
		oldElems := make(map[string]*setElem, len(old))
		for i := range old {
			e := &old[i]
			oldElems[elemID(e.set, e.Key)] = e
		}
		for i := range new {
			e := &new[i]
			id := elemID(e.set, e.Key)
			o := oldElems[id]
			delete(oldElems, id)
			if o != nil && o.sameValue(&e.Element) {
				continue
			}
			if p.intervals[e.set] {
				changedInterval[e.set] = true
				continue
			}
			if o != nil {
				p.delElems[e.set] = append(p.delElems[e.set], o.Element)
			}
			p.addElems[e.set] = append(p.addElems[e.set], e.Element)
		}
		for i := range old {
			o := &old[i]
			if oldElems[elemID(o.set, o.Key)] == nil {
				continue
			}
			if p.intervals[o.set] {
				changedInterval[o.set] = true
				continue
			}
			p.delElems[o.set] = append(p.delElems[o.set], o.Element)
		}
	}
	for set := range changedInterval {
		var all []Element
		for _, e := range new {
			if e.set == set {
				all = append(all, e.Element)
			}
		}
		p.refill[set] = all
	}
}

func elemID(set string, key []byte) string { return set + "\x00" + string(key) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
