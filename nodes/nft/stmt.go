package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

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

// Field is a packet field a statement matches on or a key is built from.
type Field int

// Fields.
const (
	IPSaddr Field = iota
	IPDaddr
	L4Proto
	THDport
)

func (f Field) String() string {
	return [...]string{"ip saddr", "ip daddr", "meta l4proto", "th dport"}[f]
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
	default:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	}
}

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

// MatchSet is "FIELD [!=] @SET".
type MatchSet struct {
	Field Field
	Not   bool
	Set   string
}

func (m MatchSet) String() string {
	_, op := cmpOp(m.Not)
	return fmt.Sprintf("%s %s@%s", m.Field, op, m.Set)
}

func (m MatchSet) lower(l *lowerer) ([]expr.Any, error) {
	s, err := l.set(m.Set)
	if err != nil {
		return nil, err
	}
	return []expr.Any{m.Field.load(1), &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: m.Not}}, nil
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
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(uint32(m.States)), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}, nil
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

// VMap is "F1 . F2 ... vmap @MAP": a verdict map lookup on a concatenation.
type VMap struct {
	Fields []Field
	Map    string
}

func (v VMap) String() string {
	parts := make([]string, len(v.Fields))
	for i, f := range v.Fields {
		parts[i] = f.String()
	}
	return fmt.Sprintf("%s vmap @%s", strings.Join(parts, " . "), v.Map)
}

func (v VMap) lower(l *lowerer) ([]expr.Any, error) {
	s, err := l.set(v.Map)
	if err != nil {
		return nil, err
	}
	// The first field goes to register 1 (the 32-bit registers 8-11), each
	// following one to the next 32-bit register: 9, 10, ...
	out := make([]expr.Any, 0, len(v.Fields)+1)
	for i, f := range v.Fields {
		reg := uint32(1)
		if i > 0 {
			reg = uint32(8 + i)
		}
		out = append(out, f.load(reg))
	}
	return append(out, &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: s.Name, SetID: s.ID}), nil
}

// NumgenZero is "numgen random mod N 0": true with probability 1/N.
type NumgenZero struct{ Mod int }

func (n NumgenZero) String() string { return fmt.Sprintf("numgen random mod %d 0", n.Mod) }

func (n NumgenZero) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: uint32(n.Mod), Type: unix.NFT_NG_RANDOM},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
	}, nil
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

// DNAT is "dnat to IP:PORT".
type DNAT struct {
	IP   netip.Addr
	Port uint16
}

func (d DNAT) String() string { return fmt.Sprintf("dnat to %s:%d", d.IP, d.Port) }

func (d DNAT) lower(*lowerer) ([]expr.Any, error) {
	a := d.IP.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(d.Port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}, nil
}

// UpdateSet is "update @SET { ip saddr }": add the source address to a
// timeout set, or refresh its timeout.
type UpdateSet struct{ Set string }

func (u UpdateSet) String() string { return fmt.Sprintf("update @%s { ip saddr }", u.Set) }

func (u UpdateSet) lower(l *lowerer) ([]expr.Any, error) {
	s, err := l.set(u.Set)
	if err != nil {
		return nil, err
	}
	return []expr.Any{
		IPSaddr.load(1),
		&expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_UPDATE},
	}, nil
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
