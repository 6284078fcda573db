package nft

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// lowerer turns the model into google/nftables objects queued on conn.
type lowerer struct {
	table *nftables.Table
	conn  *nftables.Conn
	sets  map[string]*nftables.Set // every named set in the table
}

func (l *lowerer) set(name string) (*nftables.Set, error) {
	s := l.sets[name]
	if s == nil {
		return nil, fmt.Errorf("set %s does not exist", name)
	}
	return s, nil
}

var setTypes = map[SetType]nftables.SetDatatype{
	TypeIPv4Addr:    nftables.TypeIPAddr,
	TypeInetProto:   nftables.TypeInetProto,
	TypeInetService: nftables.TypeInetService,
	TypeMark:        nftables.TypeMark,
}

func datatype(ts []SetType) (nftables.SetDatatype, bool, error) {
	if len(ts) == 1 {
		return setTypes[ts[0]], false, nil
	}
	types := make([]nftables.SetDatatype, len(ts))
	for i, t := range ts {
		types[i] = setTypes[t]
	}
	dt, err := nftables.ConcatSetType(types...)
	return dt, true, err
}

// addSet queues the creation of an empty set.
func (l *lowerer) addSet(s *Set) error {
	ns := &nftables.Set{Table: l.table, Name: s.Name, Comment: s.Comment, Interval: s.Interval, Size: s.Size}
	var err error
	if ns.KeyType, ns.Concatenation, err = datatype(s.Key); err != nil {
		return fmt.Errorf("set %s: %w", s.Name, err)
	}
	if s.Data != nil {
		ns.IsMap = true
		if ns.DataType, _, err = datatype(s.Data); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	if s.Dynamic {
		ns.HasTimeout, ns.Dynamic = true, true
	}
	if err := l.conn.AddSet(ns, nil); err != nil {
		return fmt.Errorf("add set %s: %w", s.Name, err)
	}
	l.sets[s.Name] = ns
	return nil
}

// maxElementsPerMessage keeps each element message well under what the
// kernel accepts in one NEWSETELEM (above ~1,000 elements it fails with a
// misleading ENOENT; see FACTS.md).
const maxElementsPerMessage = 500

// elements queues the addition (or deletion) of elements of a set, in
// messages of at most maxElementsPerMessage elements.
func (l *lowerer) elements(set string, es []Element, del bool) (int, error) {
	s, err := l.set(set)
	if err != nil {
		return 0, err
	}
	var batch []nftables.SetElement
	msgs := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		msgs++
		var err error
		if del {
			err = l.conn.SetDeleteElements(s, batch)
		} else {
			err = l.conn.SetAddElements(s, batch)
		}
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("set %s: elements: %w", set, err)
		}
		return nil
	}
	for i := range es {
		e := &es[i]
		batch = append(batch, nftables.SetElement{Key: e.Key, Val: e.Data, Comment: e.Comment})
		if e.KeyEnd != nil && !isZero(e.KeyEnd) {
			// Interval: the exclusive end, flagged (a range that runs to
			// the top of the address space has none).
			batch = append(batch, nftables.SetElement{Key: e.KeyEnd, IntervalEnd: true})
		}
		if len(batch) >= maxElementsPerMessage {
			if err := flush(); err != nil {
				return msgs, err
			}
		}
	}
	return msgs, flush()
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func verdictExpr(v Verdict) *expr.Verdict {
	k := map[VerdictKind]expr.VerdictKind{Accept: expr.VerdictAccept, Drop: expr.VerdictDrop,
		Return: expr.VerdictReturn, Jump: expr.VerdictJump, Goto: expr.VerdictGoto}[v.Kind]
	return &expr.Verdict{Kind: k, Chain: v.Chain}
}

var hooks = map[string]*nftables.ChainHook{
	"prerouting":  nftables.ChainHookPrerouting,
	"input":       nftables.ChainHookInput,
	"forward":     nftables.ChainHookForward,
	"output":      nftables.ChainHookOutput,
	"postrouting": nftables.ChainHookPostrouting,
}

func (l *lowerer) chain(c *Chain) *nftables.Chain {
	nc := &nftables.Chain{Name: c.Name, Table: l.table}
	if c.Base != nil {
		accept := nftables.ChainPolicyAccept
		nc.Type = nftables.ChainType(c.Base.Type)
		nc.Hooknum = hooks[c.Base.Hook]
		nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.Base.Priority))
		nc.Policy = &accept
	}
	return nc
}

// addRules queues the chain's rules.
func (l *lowerer) addRules(c *Chain) error {
	nc := &nftables.Chain{Name: c.Name, Table: l.table}
	for _, r := range c.Rules {
		var exprs []expr.Any
		for _, s := range r.Stmts {
			e, err := s.lower(l)
			if err != nil {
				return fmt.Errorf("chain %s: rule %q: %w", c.Name, r, err)
			}
			exprs = append(exprs, e...)
		}
		nr := &nftables.Rule{Table: l.table, Chain: nc, Exprs: exprs}
		if r.Comment != "" {
			nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
		}
		l.conn.AddRule(nr)
	}
	return nil
}
