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
}

// addSet queues the creation of an empty set.
func (l *lowerer) addSet(s *Set) error {
	ns := &nftables.Set{Table: l.table, Name: s.Name, Comment: s.Comment, Interval: s.Interval}
	if len(s.Key) == 1 {
		ns.KeyType = setTypes[s.Key[0]]
	} else {
		types := make([]nftables.SetDatatype, len(s.Key))
		for i, t := range s.Key {
			types[i] = setTypes[t]
		}
		kt, err := nftables.ConcatSetType(types...)
		if err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		ns.KeyType, ns.Concatenation = kt, true
	}
	if s.Verdict {
		ns.IsMap, ns.DataType = true, nftables.TypeVerdict
	}
	if s.Timeout > 0 {
		ns.HasTimeout, ns.Dynamic, ns.Timeout = true, true, s.Timeout
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
		ne := nftables.SetElement{Key: e.Key, Comment: e.Comment}
		if e.Verdict != nil {
			ne.VerdictData = verdictExpr(*e.Verdict)
		}
		batch = append(batch, ne)
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
