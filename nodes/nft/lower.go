package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// lowerer turns statements into kernel expressions for a batch.
type lowerer struct{ b *batch }

func (l *lowerer) set(name string) (*setRef, error) { return l.b.set(name), nil }

var setTypes = map[SetType]nftables.SetDatatype{
	TypeIPv4Addr:    nftables.TypeIPAddr,
	TypeInetProto:   nftables.TypeInetProto,
	TypeInetService: nftables.TypeInetService,
	TypeMark:        nftables.TypeMark,
}

// datatype is the kernel's type of a key or value, and whether it is a
// concatenation.
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

func verdictExpr(v Verdict) *expr.Verdict {
	k := map[VerdictKind]expr.VerdictKind{Accept: expr.VerdictAccept, Drop: expr.VerdictDrop,
		Return: expr.VerdictReturn, Jump: expr.VerdictJump, Goto: expr.VerdictGoto}[v.Kind]
	return &expr.Verdict{Kind: k, Chain: v.Chain}
}

// ctOrigDaddr loads "ct original ip daddr" (batch.go encodes its
// direction).
func ctOrigDaddr(reg uint32) *expr.Ct {
	return &expr.Ct{Register: reg, Key: expr.CtKey(unix.NFT_CT_DST_IP)}
}
