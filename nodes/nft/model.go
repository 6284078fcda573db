package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Ruleset is the content of berth's table: what Compile produces and what a
// Syncer writes. Its String is nft syntax (close to what `nft list table`
// prints), which the golden tests compare and Debian's nft loads.
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

// SetType is the type of one component of a set key or map value.
type SetType int

// Key and value component types. Each takes one 32-bit register.
const (
	TypeIPv4Addr SetType = iota
	TypeInetProto
	TypeInetService
	// TypeMark is a 32-bit integer in host byte order: the endpoint slot
	// that "numgen random" picks.
	TypeMark
)

func (t SetType) String() string {
	return [...]string{"ipv4_addr", "inet_proto", "inet_service", "mark"}[t]
}

// Set is a named set, or a data map when Data is set.
type Set struct {
	Name string
	Key  []SetType // more than one is a concatenation
	Data []SetType // a map's value; nil for a set
	// Typeof, when set, is printed instead of the types: nft parses a rule
	// that fills a key field from numgen only against a typeof
	// declaration. The kernel holds the same set typed by Key.
	Typeof string
	// Interval sets hold prefixes (their elements have KeyEnd).
	Interval bool
	// Dynamic sets are updated from the packet path; their elements may
	// carry timeouts.
	Dynamic bool
	Size    uint32 // the most elements it may hold, 0 for no limit
	Comment string
	// Elements, sorted by their printed form.
	Elements []Element
}

// sameSpec reports whether two sets have the same definition (not
// contents): a set whose definition changes must be recreated.
func (s *Set) sameSpec(o *Set) bool {
	return s.Name == o.Name && sliceEqual(s.Key, o.Key) && sliceEqual(s.Data, o.Data) && s.Typeof == o.Typeof &&
		s.Interval == o.Interval && s.Dynamic == o.Dynamic && s.Size == o.Size && s.Comment == o.Comment
}

// Element is one set or map element, as the kernel stores it:
// concatenated fields each padded to 4 bytes.
type Element struct {
	Key []byte
	// KeyEnd is the exclusive end of an interval element.
	KeyEnd []byte
	// Data is a map element's value.
	Data    []byte
	Comment string
}

// sameValue reports whether two elements with the same key say the same.
func (e *Element) sameValue(o *Element) bool {
	return e.Comment == o.Comment && string(e.Data) == string(o.Data) && string(e.KeyEnd) == string(o.KeyEnd)
}

// text prints the element in nft syntax.
func (e *Element) text(s *Set) string {
	var b strings.Builder
	if s.Interval {
		b.WriteString(intervalText(e.Key, e.KeyEnd))
	} else {
		formatFields(&b, s.Key, e.Key)
	}
	if e.Comment != "" {
		fmt.Fprintf(&b, " comment %q", e.Comment)
	}
	if s.Data != nil {
		b.WriteString(" : ")
		formatFields(&b, s.Data, e.Data)
	}
	return b.String()
}

// formatFields prints concatenated fields, each 4 bytes in b.
func formatFields(b *strings.Builder, types []SetType, raw []byte) {
	for i, t := range types {
		if i > 0 {
			b.WriteString(" . ")
		}
		if len(raw) < 4*(i+1) {
			b.WriteString("?")
			continue
		}
		f := raw[4*i : 4*i+4]
		switch t {
		case TypeIPv4Addr:
			b.WriteString(netip.AddrFrom4([4]byte(f)).String())
		case TypeInetProto:
			b.WriteString(protoText(f[0]))
		case TypeInetService:
			b.WriteString(strconv.Itoa(int(binary.BigEndian.Uint16(f))))
		case TypeMark:
			b.WriteString(strconv.FormatUint(uint64(binary.NativeEndian.Uint32(f)), 10))
		}
	}
}

func protoText(p byte) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// intervalText prints the IPv4 interval [first, end) as a prefix when it
// is one, otherwise as a range.
func intervalText(first, end []byte) string {
	f := uint64(binary.BigEndian.Uint32(first))
	e := uint64(1) << 32
	if len(end) == 4 && binary.BigEndian.Uint32(end) != 0 {
		e = uint64(binary.BigEndian.Uint32(end))
	}
	a := netip.AddrFrom4([4]byte(first))
	size := e - f
	if size&(size-1) == 0 && f%size == 0 {
		bits := 32
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		return netip.PrefixFrom(a, bits).String()
	}
	last := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, uint32(e-1))))
	return a.String() + "-" + last.String()
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

// Verdict is a verdict statement.
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

func jump(chain string) Verdict { return Verdict{Kind: Jump, Chain: chain} }

// String prints the rule set in nft syntax.
func (r *Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", r.Table)
	for _, s := range r.Sets {
		kind := "set"
		if s.Data != nil {
			kind = "map"
		}
		fmt.Fprintf(&b, "\t%s %s {\n", kind, s.Name)
		if s.Typeof != "" {
			fmt.Fprintf(&b, "\t\ttypeof %s\n", s.Typeof)
		} else {
			fmt.Fprintf(&b, "\t\ttype %s", joinTypes(s.Key))
			if s.Data != nil {
				b.WriteString(" : " + joinTypes(s.Data))
			}
			b.WriteString("\n")
		}
		if s.Size > 0 {
			fmt.Fprintf(&b, "\t\tsize %d\n", s.Size)
		}
		var flags []string
		if s.Dynamic {
			flags = append(flags, "dynamic", "timeout")
		}
		if s.Interval {
			flags = append(flags, "interval")
		}
		if len(flags) > 0 {
			fmt.Fprintf(&b, "\t\tflags %s\n", strings.Join(flags, ","))
		}
		if s.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", s.Comment)
		}
		if len(s.Elements) > 0 {
			b.WriteString("\t\telements = {")
			for i := range s.Elements {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "\n\t\t\t%s", s.Elements[i].text(s))
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

func joinTypes(ts []SetType) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.String()
	}
	return strings.Join(names, " . ")
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
		texts := make(map[*Element]string, len(s.Elements))
		for i := range s.Elements {
			texts[&s.Elements[i]] = s.Elements[i].text(s)
		}
		idx := make([]int, len(s.Elements))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return texts[&s.Elements[idx[a]]] < texts[&s.Elements[idx[b]]] })
		sorted := make([]Element, len(s.Elements))
		for i, j := range idx {
			sorted[i] = s.Elements[j]
		}
		s.Elements = sorted
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
	return Element{Key: b[:]}
}

// tuple is "ip . proto . port", the key of a Service address: 12 bytes.
type tuple [12]byte

func makeTuple(ip netip.Addr, p Protocol, port uint16) tuple {
	var t tuple
	a := ip.As4()
	copy(t[:], a[:])
	t[4] = protoNumber(p)
	binary.BigEndian.PutUint16(t[8:], port)
	return t
}

// slotKey writes "ip . proto . port . slot" into k (16 bytes).
func slotKey(k []byte, t tuple, slot uint32) []byte {
	copy(k, t[:])
	binary.NativeEndian.PutUint32(k[12:], slot)
	return k
}

// addrPortData writes "ip . port", a DNAT target, into d (8 bytes).
func addrPortData(d []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().As4()
	copy(d, a[:])
	binary.BigEndian.PutUint16(d[4:], ap.Port())
	return d
}
