package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// Ruleset is the content of berth's table: what Compile produces and what a
// Syncer writes. Its String is nft syntax (close to what `nft list table`
// prints), which the golden tests compare.
type Ruleset struct {
	Table  string
	Sets   []*Set   // sorted by name
	Chains []*Chain // base chains first, in hook order; then by name
}

// Chain is a chain with its rules. Base chains are attached to a hook.
type Chain struct {
	Name  string
	Base  *BaseChain
	Rules []Rule
}

// BaseChain says where a base chain is attached.
type BaseChain struct {
	Type     string // "nat" or "filter"
	Hook     string // "prerouting", "input", "forward", "output", "postrouting"
	Priority int
}

// SetType is the type of one component of a set key.
type SetType int

// Key component types.
const (
	TypeIPv4Addr SetType = iota
	TypeInetProto
	TypeInetService
)

func (t SetType) String() string {
	return [...]string{"ipv4_addr", "inet_proto", "inet_service"}[t]
}

// Set is a named set, or a verdict map when Verdict is set.
type Set struct {
	Name    string
	Key     []SetType // more than one is a concatenation
	Verdict bool      // a map to verdicts ("vmap")
	// Interval sets hold prefixes (their elements have KeyEnd).
	Interval bool
	// Timeout, when set, makes a dynamic set whose elements expire (session
	// affinity).
	Timeout  time.Duration
	Comment  string
	Elements []Element // sorted by Text
}

// sameSpec reports whether two sets have the same definition (not
// contents): a set whose definition changes must be recreated.
func (s *Set) sameSpec(o *Set) bool {
	return s.Name == o.Name && sliceEqual(s.Key, o.Key) && s.Verdict == o.Verdict &&
		s.Interval == o.Interval && s.Timeout == o.Timeout && s.Comment == o.Comment
}

// Element is one set or map element.
type Element struct {
	// Text is the key in nft syntax; it identifies the element.
	Text string
	// Key is the key as the kernel stores it (concatenated fields padded to
	// 4 bytes); KeyEnd is the exclusive end of an interval element.
	Key, KeyEnd []byte
	// Verdict is the value of a verdict map element.
	Verdict *Verdict
	Comment string
}

func (e *Element) String() string {
	s := e.Text
	if e.Comment != "" {
		s += fmt.Sprintf(" comment %q", e.Comment)
	}
	if e.Verdict != nil {
		s += " : " + e.Verdict.String()
	}
	return s
}

// sameValue reports whether two elements with the same key say the same.
func (e *Element) sameValue(o *Element) bool {
	if (e.Verdict == nil) != (o.Verdict == nil) || e.Comment != o.Comment {
		return false
	}
	return e.Verdict == nil || *e.Verdict == *o.Verdict
}

// Rule is one rule: statements evaluated in order.
type Rule struct {
	Stmts   []Stmt
	Comment string
}

func (r Rule) String() string {
	parts := make([]string, 0, len(r.Stmts)+1)
	for _, s := range r.Stmts {
		parts = append(parts, s.String())
	}
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}

func rulesEqual(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

// VerdictKind is what a verdict does.
type VerdictKind int

// Verdicts.
const (
	Accept VerdictKind = iota
	Drop
	Return
	Jump
	Goto
)

// Verdict is a verdict statement or a verdict map value.
type Verdict struct {
	Kind  VerdictKind
	Chain string // for Jump and Goto
}

func (v Verdict) String() string {
	switch v.Kind {
	case Accept:
		return "accept"
	case Drop:
		return "drop"
	case Return:
		return "return"
	case Jump:
		return "jump " + v.Chain
	default:
		return "goto " + v.Chain
	}
}

func jump(chain string) Verdict     { return Verdict{Kind: Jump, Chain: chain} }
func goTo(chain string) Verdict     { return Verdict{Kind: Goto, Chain: chain} }
func gotoPtr(chain string) *Verdict { v := goTo(chain); return &v }

// String prints the rule set in nft syntax.
func (r *Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", r.Table)
	for _, s := range r.Sets {
		kind := "set"
		if s.Verdict {
			kind = "map"
		}
		fmt.Fprintf(&b, "\t%s %s {\n", kind, s.Name)
		types := make([]string, len(s.Key))
		for i, t := range s.Key {
			types[i] = t.String()
		}
		fmt.Fprintf(&b, "\t\ttype %s", strings.Join(types, " . "))
		if s.Verdict {
			b.WriteString(" : verdict")
		}
		b.WriteString("\n")
		var flags []string
		if s.Timeout > 0 {
			flags = append(flags, "dynamic", "timeout")
		}
		if s.Interval {
			flags = append(flags, "interval")
		}
		if len(flags) > 0 {
			fmt.Fprintf(&b, "\t\tflags %s\n", strings.Join(flags, ","))
		}
		if s.Timeout > 0 {
			fmt.Fprintf(&b, "\t\ttimeout %ds\n", int64(s.Timeout/time.Second))
		}
		if s.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", s.Comment)
		}
		if len(s.Elements) > 0 {
			b.WriteString("\t\telements = {")
			for i, e := range s.Elements {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "\n\t\t\t%s", e.String())
			}
			b.WriteString(" }\n")
		}
		b.WriteString("\t}\n\n")
	}
	for i, c := range r.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Base != nil {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Base.Type, c.Base.Hook, priorityName(c.Base.Hook, c.Base.Priority))
		}
		for _, rule := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", rule)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// priorityName prints a priority as nft accepts and lists it: by name
// where nft 1.0.6 knows one for the hook, otherwise as a number.
func priorityName(hook string, p int) string {
	switch {
	case hook == "prerouting" && p == prioDstNAT:
		return "dstnat"
	case hook == "postrouting" && p == prioSrcNAT:
		return "srcnat"
	case p == prioFilter:
		return "filter"
	}
	return fmt.Sprint(p)
}

const (
	prioDstNAT = -100
	prioFilter = 0
	prioSrcNAT = 100
)

// sortRuleset puts sets, chains and elements in their printing order.
func sortRuleset(r *Ruleset) {
	sort.Slice(r.Sets, func(i, j int) bool { return r.Sets[i].Name < r.Sets[j].Name })
	for _, s := range r.Sets {
		sortElements(s.Elements)
	}
	sort.SliceStable(r.Chains, func(i, j int) bool {
		a, b := r.Chains[i], r.Chains[j]
		if (a.Base != nil) != (b.Base != nil) {
			return a.Base != nil
		}
		if a.Base != nil {
			return false // base chains keep their declared order
		}
		return a.Name < b.Name
	})
}

func sortElements(es []Element) {
	sort.Slice(es, func(i, j int) bool { return es[i].Text < es[j].Text })
}

// Element keys. Concatenated fields are padded to 4 bytes, as the kernel
// stores them in 32-bit registers.

func protoName(p Protocol) string { return strings.ToLower(string(p)) }

func protoNumber(p Protocol) byte {
	switch p {
	case UDP:
		return 17
	case SCTP:
		return 132
	default:
		return 6
	}
}

func ipKey(ip netip.Addr) Element {
	b := ip.As4()
	return Element{Text: ip.String(), Key: b[:]}
}

// serviceKeyElem is "ip . proto . port".
func ipProtoPortKey(ip netip.Addr, p Protocol, port uint16) Element {
	a := ip.As4()
	k := make([]byte, 12)
	copy(k, a[:])
	k[4] = protoNumber(p)
	binary.BigEndian.PutUint16(k[8:], port)
	return Element{Text: fmt.Sprintf("%s . %s . %d", ip, protoName(p), port), Key: k}
}

// protoPortKey is "proto . port".
func protoPortKey(p Protocol, port uint16) Element {
	k := make([]byte, 8)
	k[0] = protoNumber(p)
	binary.BigEndian.PutUint16(k[4:], port)
	return Element{Text: fmt.Sprintf("%s . %d", protoName(p), port), Key: k}
}
