package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Stmt is one statement of a rule: it prints itself in nft syntax and
// lowers itself to kernel expressions.
type Stmt interface {
	String() string
	lower(l *lowerer) ([]expr.Any, error)
}

// Field is a packet or conntrack field a statement matches on or a key is
// built from. Each fits one 32-bit register.
type Field int

// Fields.
const (
	IPSaddr Field = iota
	IPDaddr
	L4Proto
	THDport
	// CtOrigDaddr and CtOrigDport are the destination the connection was
	// opened to, before DNAT ("ct original ip daddr", "ct original
	// proto-dst"; nft wants a protocol match before the latter).
	CtOrigDaddr
	CtOrigDport
)

func (f Field) String() string {
	return [...]string{"ip saddr", "ip daddr", "meta l4proto", "th dport",
		"ct original ip daddr", "ct original proto-dst"}[f]
}

// load puts the field into register reg.
func (f Field) load(reg uint32) expr.Any {
	switch f {
	case IPSaddr:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	case IPDaddr:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	case L4Proto:
		return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}
	case CtOrigDaddr:
		return ctOrigDaddr(reg)
	case CtOrigDport:
		return &expr.Ct{Register: reg, Key: expr.CtKeyPROTODST, Direction: 0}
	default:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	}
}

// Registers: a concatenation starts in the 16-byte register 1 (the 32-bit
// registers 8 to 11) and each further field takes the next 32-bit one; a
// second concatenation starts in register 2 (32-bit registers 12 to 15).
const (
	reg1, reg2     = 1, 2
	reg32of1       = 8
	reg32of2       = 12
	maxConcatField = 4
)

// loadConcat loads fields into consecutive 32-bit registers from the
// 16-byte register base.
func loadConcat(fields []Field, base uint32) []expr.Any {
	out := make([]expr.Any, 0, len(fields))
	first := uint32(reg32of1)
	if base == reg2 {
		first = reg32of2
	}
	for i, f := range fields {
		reg := base
		if i > 0 {
			reg = first + uint32(i)
		}
		out = append(out, f.load(reg))
	}
	return out
}

func concatString(fields []Field) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f.String()
	}
	return strings.Join(parts, " . ")
}

// tupleFields is a Service address: "ip daddr . meta l4proto . th dport".
var tupleFields = []Field{IPDaddr, L4Proto, THDport}

func cmpOp(neg bool) (expr.CmpOp, string) {
	if neg {
		return expr.CmpOpNeq, "!= "
	}
	return expr.CmpOpEq, ""
}

// MatchPrefix is "ip saddr|daddr [!=] PREFIX" (an address for /32).
type MatchPrefix struct {
	Field  Field // IPSaddr or IPDaddr
	Not    bool
	Prefix netip.Prefix
}

func (m MatchPrefix) String() string {
	_, op := cmpOp(m.Not)
	v := m.Prefix.String()
	if m.Prefix.IsSingleIP() {
		v = m.Prefix.Addr().String()
	}
	return fmt.Sprintf("%s %s%s", m.Field, op, v)
}

func (m MatchPrefix) lower(*lowerer) ([]expr.Any, error) {
	op, _ := cmpOp(m.Not)
	p := m.Prefix.Masked()
	a := p.Addr().As4()
	out := []expr.Any{m.Field.load(1)}
	if !p.IsSingleIP() {
		mask := make([]byte, 4)
		binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
	}
	return append(out, &expr.Cmp{Op: op, Register: 1, Data: a[:]}), nil
}

// MatchPort is "tcp|udp|sctp dport PORT": the protocol, then the port.
type MatchPort struct {
	Protocol Protocol
	Port     uint16
}

func (m MatchPort) String() string { return fmt.Sprintf("%s dport %d", protoName(m.Protocol), m.Port) }

func (m MatchPort) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{
		L4Proto.load(1),
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNumber(m.Protocol)}},
		THDport.load(1),
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Port)},
	}, nil
}

// MatchProto is "meta l4proto PROTO".
type MatchProto struct{ Protocol Protocol }

func (m MatchProto) String() string { return "meta l4proto " + protoName(m.Protocol) }

func (m MatchProto) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{L4Proto.load(1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNumber(m.Protocol)}}}, nil
}

// MatchSet is "F1 [. F2 ...] [!=] @SET": a set lookup on a field or a
// concatenation of fields.
type MatchSet struct {
	Fields []Field
	Not    bool
	Set    string
}

func inSet(set string, fields ...Field) MatchSet { return MatchSet{Fields: fields, Set: set} }
func notInSet(set string, fields ...Field) MatchSet {
	return MatchSet{Fields: fields, Not: true, Set: set}
}

func (m MatchSet) String() string {
	_, op := cmpOp(m.Not)
	return fmt.Sprintf("%s %s@%s", concatString(m.Fields), op, m.Set)
}

func (m MatchSet) lower(l *lowerer) ([]expr.Any, error) {
	s, err := l.set(m.Set)
	if err != nil {
		return nil, err
	}
	return append(loadConcat(m.Fields, reg1), &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, Invert: m.Not}), nil
}

// MatchLocal is "fib saddr|daddr type local".
type MatchLocal struct{ Field Field }

func (m MatchLocal) String() string {
	return fmt.Sprintf("fib %s type local", strings.TrimPrefix(m.Field.String(), "ip "))
}

func (m MatchLocal) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: m.Field == IPSaddr, FlagDADDR: m.Field == IPDaddr, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}, nil
}

// CtState is a set of conntrack states.
type CtState uint32

// Conntrack states.
const (
	CtNew         = CtState(expr.CtStateBitNEW)
	CtEstablished = CtState(expr.CtStateBitESTABLISHED)
	CtRelated     = CtState(expr.CtStateBitRELATED)
	CtInvalid     = CtState(expr.CtStateBitINVALID)
)

// MatchCtState is "ct state S1,S2".
type MatchCtState struct{ States CtState }

func (m MatchCtState) String() string {
	var names []string
	for _, s := range []struct {
		bit  CtState
		name string
	}{{CtInvalid, "invalid"}, {CtEstablished, "established"}, {CtRelated, "related"}, {CtNew, "new"}} {
		if m.States&s.bit != 0 {
			names = append(names, s.name)
		}
	}
	return "ct state " + strings.Join(names, ",")
}

func (m MatchCtState) lower(*lowerer) ([]expr.Any, error) {
	return ctBits(expr.CtKeySTATE, uint32(m.States)), nil
}

func ctBits(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is the conntrack status bit of a destination-NATed connection
// (IPS_DST_NAT).
const ipsDstNAT = 1 << 5

// MatchDNATed is "ct status dnat": the connection was destination-NATed.
type MatchDNATed struct{}

func (MatchDNATed) String() string { return "ct status dnat" }

func (MatchDNATed) lower(*lowerer) ([]expr.Any, error) {
	return ctBits(expr.CtKeySTATUS, ipsDstNAT), nil
}

// MatchMarkUnset is "meta mark & MASK == 0".
type MatchMarkUnset struct{ Mask uint32 }

func (m MatchMarkUnset) String() string {
	return fmt.Sprintf("meta mark & 0x%08x == 0x00000000", m.Mask)
}

func (m MatchMarkUnset) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(m.Mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
	}, nil
}

// SetMark is "meta mark set meta mark | BITS" (or "^ BITS" with Toggle).
type SetMark struct {
	Bits   uint32
	Toggle bool
}

func (m SetMark) String() string {
	op := "|"
	if m.Toggle {
		op = "^"
	}
	return fmt.Sprintf("meta mark set meta mark %s 0x%08x", op, m.Bits)
}

func (m SetMark) lower(*lowerer) ([]expr.Any, error) {
	mask := ^m.Bits // or: clear the bits, then xor them in
	if m.Toggle {
		mask = ^uint32(0)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(m.Bits)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}, nil
}

// Numgen is "numgen random mod Mod offset Offset": a random number in
// [Offset, Offset+Mod).
type Numgen struct{ Mod, Offset uint32 }

func (n Numgen) String() string {
	s := fmt.Sprintf("numgen random mod %d", n.Mod)
	if n.Offset != 0 {
		s += fmt.Sprintf(" offset %d", n.Offset)
	}
	return s
}

// DNATMap is "dnat ip to F1 . F2 ... [. numgen ...] map @MAP": the
// destination address and port come from a map whose key is the fields,
// and a random slot when Slot is set.
type DNATMap struct {
	Fields []Field
	Slot   *Numgen
	Map    string
}

func (d DNATMap) String() string {
	k := concatString(d.Fields)
	if d.Slot != nil {
		k += " . " + d.Slot.String()
	}
	return fmt.Sprintf("dnat ip to %s map @%s", k, d.Map)
}

func (d DNATMap) lower(l *lowerer) ([]expr.Any, error) {
	s, err := l.set(d.Map)
	if err != nil {
		return nil, err
	}
	if len(d.Fields) > maxConcatField || d.Slot != nil && len(d.Fields) == maxConcatField {
		return nil, fmt.Errorf("dnat map key of more than %d fields", maxConcatField)
	}
	out := loadConcat(d.Fields, reg1)
	if d.Slot != nil {
		out = append(out, &expr.Numgen{Register: reg32of1 + uint32(len(d.Fields)), Modulus: d.Slot.Mod,
			Offset: d.Slot.Offset, Type: unix.NFT_NG_RANDOM})
	}
	// The value lands in 32-bit registers 8 (address) and 9 (port).
	return append(out,
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: s.Name, SetID: s.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg32of1 + 1, Specified: true},
	), nil
}

// UpdateMap is "update @MAP { KEY timeout T : VALUE }": add the element,
// or refresh its timeout, from the packet path.
type UpdateMap struct {
	Map        string
	Key, Value []Field
	Timeout    time.Duration
}

func (u UpdateMap) String() string {
	return fmt.Sprintf("update @%s { %s timeout %ds : %s }", u.Map, concatString(u.Key), int64(u.Timeout/time.Second), concatString(u.Value))
}

func (u UpdateMap) lower(l *lowerer) ([]expr.Any, error) {
	s, err := l.set(u.Map)
	if err != nil {
		return nil, err
	}
	out := append(loadConcat(u.Key, reg1), loadConcat(u.Value, reg2)...)
	return append(out, &expr.Dynset{SrcRegKey: reg1, SrcRegData: reg2, SetName: s.Name, SetID: s.ID,
		Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: u.Timeout}), nil
}

// Masquerade is "masquerade [fully-random]".
type Masquerade struct{ FullyRandom bool }

func (m Masquerade) String() string {
	if m.FullyRandom {
		return "masquerade fully-random"
	}
	return "masquerade"
}

func (m Masquerade) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{&expr.Masq{FullyRandom: m.FullyRandom}}, nil
}

// icmpPortUnreachable is ICMP code 3 (RFC 792).
const icmpPortUnreachable = 3

// Reject is "reject": an ICMP port unreachable (a TCP connect fails at
// once with "connection refused").
type Reject struct{}

func (Reject) String() string { return "reject" }

func (Reject) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreachable}}, nil
}

// lower makes the verdict a statement.
func (v Verdict) lower(*lowerer) ([]expr.Any, error) { return []expr.Any{verdictExpr(v)}, nil }
