package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batch encodes the messages of one nftables transaction straight into
// one buffer. google/nftables builds a netlink.Attribute tree for every
// set element (a full sync of 10,000 Services made 2.2 million
// allocations there alone) and waits for each acknowledgement with two
// system calls; it also cannot send the direction that "ct original ip
// daddr" (NFT_CT_DST_IP) requires. Expressions are still encoded by
// google/nftables/expr.
type batch struct {
	buf   []byte
	table string
	seq   uint32
	what  []string // what each acknowledged message does, by seq - 1
	sets  map[string]uint32
	err   error
}

// Netlink header sizes.
const (
	nlmsgHeaderLen = 16
	nfgenLen       = 4
	attrHeaderLen  = 4
)

// newBatch starts a batch in buf (which it may reuse).
func newBatch(table string, buf []byte) *batch {
	b := &batch{table: table, sets: map[string]uint32{}, buf: buf[:0]}
	b.control(unix.NFNL_MSG_BATCH_BEGIN)
	return b
}

// grow makes room for n elements and some more messages.
func (b *batch) grow(n int) { b.buf = slices.Grow(b.buf, 64*n+1<<16) }

// control writes a batch begin or end message.
func (b *batch) control(typ int) {
	start := len(b.buf)
	b.header(uint16(typ), unix.NLM_F_REQUEST, 0)
	b.buf = binary.BigEndian.AppendUint16(append(b.buf, unix.AF_UNSPEC, unix.NFNETLINK_V0), unix.NFNL_SUBSYS_NFTABLES)
	b.finish(start)
}

func (b *batch) header(typ, flags uint16, seq uint32) {
	b.buf = binary.NativeEndian.AppendUint32(b.buf, 0) // length, set by finish
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, flags)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, seq)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, 0) // port id
}

// begin starts an nftables message that asks for an acknowledgement.
func (b *batch) begin(msg int, flags uint16, what string) int {
	start := len(b.buf)
	b.seq++
	b.what = append(b.what, what)
	b.header(uint16(unix.NFNL_SUBSYS_NFTABLES<<8|msg), unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags, b.seq)
	b.buf = append(b.buf, unix.NFPROTO_IPV4, unix.NFNETLINK_V0, 0, 0)
	return start
}

// finish sets the length of the message that starts at start.
func (b *batch) finish(start int) {
	binary.NativeEndian.PutUint32(b.buf[start:], uint32(len(b.buf)-start))
}

func (b *batch) attr(typ uint16, data []byte) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(attrHeaderLen+len(data)))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = append(b.buf, data...)
	for len(b.buf)%4 != 0 {
		b.buf = append(b.buf, 0)
	}
}

func (b *batch) str(typ uint16, s string) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(attrHeaderLen+len(s)+1))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = append(append(b.buf, s...), 0)
	for len(b.buf)%4 != 0 {
		b.buf = append(b.buf, 0)
	}
}

func (b *batch) u32(typ uint16, v uint32) { b.attr(typ, binary.BigEndian.AppendUint32(nil, v)) }

// nest starts a nested attribute; end closes it.
func (b *batch) nest(typ uint16) int {
	start := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ|unix.NLA_F_NESTED)
	return start
}

func (b *batch) end(start int) {
	binary.NativeEndian.PutUint16(b.buf[start:], uint16(len(b.buf)-start))
}

// value writes a nested NFTA_DATA_VALUE.
func (b *batch) value(typ uint16, v []byte) {
	n := b.nest(typ)
	b.attr(unix.NFTA_DATA_VALUE, v)
	b.end(n)
}

func (b *batch) addTable() {
	m := b.begin(unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, "add table")
	b.str(unix.NFTA_TABLE_NAME, b.table)
	b.u32(unix.NFTA_TABLE_FLAGS, 0)
	b.finish(m)
}

func (b *batch) delTable() {
	m := b.begin(unix.NFT_MSG_DELTABLE, 0, "delete table")
	b.str(unix.NFTA_TABLE_NAME, b.table)
	b.finish(m)
}

// nfAccept is the verdict NF_ACCEPT, a base chain's policy.
const nfAccept = 1

var hookNumbers = map[string]uint32{
	"prerouting": unix.NF_INET_PRE_ROUTING, "input": unix.NF_INET_LOCAL_IN, "forward": unix.NF_INET_FORWARD,
	"output": unix.NF_INET_LOCAL_OUT, "postrouting": unix.NF_INET_POST_ROUTING,
}

func (b *batch) addChain(c *Chain) {
	m := b.begin(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, "add chain "+c.Name)
	b.str(unix.NFTA_CHAIN_TABLE, b.table)
	b.str(unix.NFTA_CHAIN_NAME, c.Name)
	if c.Base != nil {
		h := b.nest(unix.NFTA_CHAIN_HOOK)
		b.u32(unix.NFTA_HOOK_HOOKNUM, hookNumbers[c.Base.Hook])
		b.u32(unix.NFTA_HOOK_PRIORITY, uint32(int32(c.Base.Priority)))
		b.end(h)
		b.u32(unix.NFTA_CHAIN_POLICY, nfAccept)
		b.str(unix.NFTA_CHAIN_TYPE, c.Base.Type)
	}
	b.finish(m)
}

// chainOp flushes (NFT_MSG_DELRULE) or deletes (NFT_MSG_DELCHAIN) a chain.
func (b *batch) chainOp(msg int, chain, what string) {
	m := b.begin(msg, 0, what+" "+chain)
	if msg == unix.NFT_MSG_DELRULE {
		b.str(unix.NFTA_RULE_TABLE, b.table)
		b.str(unix.NFTA_RULE_CHAIN, chain)
	} else {
		b.str(unix.NFTA_CHAIN_TABLE, b.table)
		b.str(unix.NFTA_CHAIN_NAME, chain)
	}
	b.finish(m)
}

// addRules appends the chain's rules.
func (b *batch) addRules(c *Chain) error {
	l := &lowerer{b: b}
	for _, r := range c.Rules {
		m := b.begin(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, "add rule in "+c.Name)
		b.str(unix.NFTA_RULE_TABLE, b.table)
		b.str(unix.NFTA_RULE_CHAIN, c.Name)
		list := b.nest(unix.NFTA_RULE_EXPRESSIONS)
		for _, st := range r.Stmts {
			exprs, err := st.lower(l)
			if err != nil {
				return fmt.Errorf("chain %s: rule %q: %w", c.Name, r, err)
			}
			for _, e := range exprs {
				enc, err := marshalExpr(e)
				if err != nil {
					return fmt.Errorf("chain %s: rule %q: %w", c.Name, r, err)
				}
				b.attr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, enc)
			}
		}
		b.end(list)
		if r.Comment != "" {
			b.attr(unix.NFTA_RULE_USERDATA, userdata.AppendString(nil, userdata.TypeComment, r.Comment))
		}
		b.finish(m)
	}
	return nil
}

// marshalExpr encodes one expression as google/nftables does, except
// "ct original ip daddr", whose direction google/nftables does not send.
func marshalExpr(e expr.Any) ([]byte, error) {
	ct, ok := e.(*expr.Ct)
	if !ok || ct.Key != expr.CtKey(unix.NFT_CT_DST_IP) {
		return expr.Marshal(unix.NFPROTO_IPV4, e)
	}
	data, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_CT_KEY, Data: binary.BigEndian.AppendUint32(nil, uint32(ct.Key))},
		{Type: unix.NFTA_CT_DREG, Data: binary.BigEndian.AppendUint32(nil, ct.Register)},
		{Type: unix.NFTA_CT_DIRECTION, Data: []byte{byte(ct.Direction)}},
	})
	if err != nil {
		return nil, err
	}
	return netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_EXPR_NAME, Data: []byte("ct\x00")},
		{Type: unix.NLA_F_NESTED | unix.NFTA_EXPR_DATA, Data: data},
	})
}

// setRef names a set in an expression: by ID as well when it is created
// in this batch.
type setRef struct {
	Name string
	ID   uint32
}

func (b *batch) set(name string) *setRef { return &setRef{Name: name, ID: b.sets[name]} }

// Set flags (linux/netfilter/nf_tables.h).
const nftSetConcat = 0x80

func (b *batch) addSet(s *Set) error {
	kt, concat, err := datatype(s.Key)
	if err != nil {
		return fmt.Errorf("set %s: %w", s.Name, err)
	}
	id := uint32(len(b.sets) + 1)
	b.sets[s.Name] = id
	var flags uint32
	if s.Interval {
		flags |= unix.NFT_SET_INTERVAL
	}
	if s.Data != nil {
		flags |= unix.NFT_SET_MAP
	}
	if s.Dynamic {
		flags |= unix.NFT_SET_TIMEOUT | unix.NFT_SET_EVAL
	}
	if concat {
		flags |= nftSetConcat
	}
	m := b.begin(unix.NFT_MSG_NEWSET, unix.NLM_F_CREATE, "add set "+s.Name)
	b.str(unix.NFTA_SET_TABLE, b.table)
	b.str(unix.NFTA_SET_NAME, s.Name)
	b.u32(unix.NFTA_SET_FLAGS, flags)
	b.u32(unix.NFTA_SET_KEY_TYPE, magic(kt))
	b.u32(unix.NFTA_SET_KEY_LEN, kt.Bytes)
	b.u32(unix.NFTA_SET_ID, id)
	if s.Data != nil {
		dt, _, err := datatype(s.Data)
		if err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		b.u32(unix.NFTA_SET_DATA_TYPE, magic(dt))
		b.u32(unix.NFTA_SET_DATA_LEN, dt.Bytes)
	}
	if s.Size > 0 || concat {
		desc := b.nest(unix.NFTA_SET_DESC)
		if s.Size > 0 {
			b.u32(unix.NFTA_SET_DESC_SIZE, s.Size)
		}
		if concat {
			// The field lengths: nft needs them to list the set.
			c := b.nest(2) // NFTA_SET_DESC_CONCAT
			for _, t := range s.Key {
				f := b.nest(unix.NFTA_LIST_ELEM)
				b.u32(1, setTypes[t].Bytes) // NFTA_SET_FIELD_LEN
				b.end(f)
			}
			b.end(c)
		}
		b.end(desc)
	}
	var ud []byte
	if s.Interval {
		ud = userdata.AppendUint32(ud, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, 2) // big endian, as nft writes
	}
	if s.Comment != "" {
		ud = userdata.AppendString(ud, userdata.NFTNL_UDATA_SET_COMMENT, s.Comment)
	}
	if ud != nil {
		b.attr(unix.NFTA_SET_USERDATA, ud)
	}
	b.finish(m)
	return nil
}

// magic is the kernel's number for a (concatenated) key type.
func magic(t nftables.SetDatatype) uint32 { return t.GetNFTMagic() }

func (b *batch) delSet(name string) {
	m := b.begin(unix.NFT_MSG_DELSET, 0, "delete set "+name)
	b.str(unix.NFTA_SET_TABLE, b.table)
	b.str(unix.NFTA_SET_NAME, name)
	b.finish(m)
}

// flushSet deletes every element of a set.
func (b *batch) flushSet(name string) {
	m := b.begin(unix.NFT_MSG_DELSETELEM, 0, "flush set "+name)
	b.str(unix.NFTA_SET_ELEM_LIST_TABLE, b.table)
	b.str(unix.NFTA_SET_ELEM_LIST_SET, name)
	b.finish(m)
}

// maxElementsPerMessage keeps each element message well under what the
// kernel takes in one NEWSETELEM (FACTS.md: above ~1,000 it failed with a
// misleading ENOENT).
const maxElementsPerMessage = 500

// elements adds (or deletes) elements of a set, in messages of at most
// maxElementsPerMessage elements.
func (b *batch) elements(set string, es []Element, del bool) {
	msg, verb := unix.NFT_MSG_NEWSETELEM, "add elements to "
	if del {
		msg, verb = unix.NFT_MSG_DELSETELEM, "delete elements from "
	}
	for len(es) > 0 {
		n := min(len(es), maxElementsPerMessage)
		m := b.begin(msg, unix.NLM_F_CREATE, verb+set)
		b.str(unix.NFTA_SET_ELEM_LIST_TABLE, b.table)
		b.str(unix.NFTA_SET_ELEM_LIST_SET, set)
		if id := b.sets[set]; id != 0 {
			b.u32(unix.NFTA_SET_ELEM_LIST_SET_ID, id)
		}
		list := b.nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		for i := range es[:n] {
			e := &es[i]
			b.element(e.Key, e.Data, e.Comment, false)
			if len(e.KeyEnd) > 0 && !isZero(e.KeyEnd) {
				// Interval: the exclusive end, flagged (a range that
				// runs to the top of the address space has none).
				b.element(e.KeyEnd, nil, "", true)
			}
		}
		b.end(list)
		b.finish(m)
		es = es[n:]
	}
}

func (b *batch) element(key, data []byte, comment string, intervalEnd bool) {
	el := b.nest(unix.NFTA_LIST_ELEM)
	if intervalEnd {
		b.u32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END)
	}
	b.value(unix.NFTA_SET_ELEM_KEY, key)
	if data != nil {
		b.value(unix.NFTA_SET_ELEM_DATA, data)
	}
	if comment != "" {
		b.attr(unix.NFTA_SET_ELEM_USERDATA, userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, comment))
	}
	b.end(el)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// send writes the batch in one sendmsg and reads an acknowledgement for
// every message. The kernel applies all of it or nothing.
func (b *batch) send(c *netlink.Conn) error {
	if b.err != nil {
		return b.err
	}
	if b.seq == 0 {
		return nil
	}
	b.control(unix.NFNL_MSG_BATCH_END)
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return !errors.Is(serr, unix.EAGAIN)
	}); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("send batch: %w", serr)
	}
	var errs []error
	buf := make([]byte, 1<<16)
	for acked := uint32(0); acked < b.seq; {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		}); err != nil {
			return fmt.Errorf("receive acknowledgements: %w", err)
		}
		if errors.Is(rerr, unix.ENOBUFS) {
			return fmt.Errorf("receive acknowledgements (lost; the batch may have been applied): %w", rerr)
		}
		if rerr != nil {
			return fmt.Errorf("receive acknowledgements: %w", rerr)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("parse acknowledgements: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			acked++
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				what := b.whatOf(m.Header.Seq)
				if msg := extAckMessage(m); msg != "" {
					what += " (" + msg + ")"
				}
				errs = append(errs, fmt.Errorf("%s: %w", what, syscall.Errno(-code)))
			}
		}
	}
	if len(errs) > 0 {
		return firstError(errors.Join(errs...))
	}
	return nil
}

// extAckMessage is the kernel's explanation in an error acknowledgement
// (NLMSGERR_ATTR_MSG), on a socket with NETLINK_CAP_ACK and
// NETLINK_EXT_ACK: after the error code, the failed message's header, then
// attributes.
func extAckMessage(m syscall.NetlinkMessage) string {
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(m.Data) < 4+nlmsgHeaderLen {
		return ""
	}
	attrs := m.Data[4+nlmsgHeaderLen:]
	for len(attrs) >= attrHeaderLen {
		l := int(binary.NativeEndian.Uint16(attrs))
		typ := binary.NativeEndian.Uint16(attrs[2:])
		if l < attrHeaderLen || l > len(attrs) {
			return ""
		}
		if typ == unix.NLMSGERR_ATTR_MSG {
			v := attrs[attrHeaderLen:l]
			for len(v) > 0 && v[len(v)-1] == 0 {
				v = v[:len(v)-1]
			}
			return string(v)
		}
		attrs = attrs[(l+3)&^3:]
	}
	return ""
}

func (b *batch) whatOf(seq uint32) string {
	if seq == 0 || int(seq) > len(b.what) {
		return "batch"
	}
	return b.what[seq-1]
}
