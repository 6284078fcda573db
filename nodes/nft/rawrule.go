package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The affinity-record chain reads "ct original ip daddr" (the Service
// address a DNATed connection was opened to). The kernel's key for it
// (NFT_CT_DST_IP) takes a direction, which google/nftables v0.3.0 sends
// only with other ct keys; the family-sized NFT_CT_DST it does send with
// one makes Debian's nft 1.0.6 abort when it lists the rule (its length is
// unknown inside a concatenation). So the Syncer writes this chain's rules
// in a small batch of its own, after the main one: recording affinity is
// best effort, and until the rules are there connections are merely not
// recorded.

// ctOrigDaddr is the load that the raw batch encodes by hand.
func ctOrigDaddr(reg uint32) *expr.Ct {
	return &expr.Ct{Register: reg, Key: expr.CtKey(unix.NFT_CT_DST_IP)}
}

// writeChainRules replaces the rules of chain (which exists) in one batch.
func (s *Syncer) writeChainRules(chain string, rules []Rule) error {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: s.netns})
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer conn.Close()
	l := &lowerer{table: s.table, conn: s.conn, sets: s.sets}
	names := []netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: []byte(s.table.Name + "\x00")},
		{Type: unix.NFTA_RULE_CHAIN, Data: []byte(chain + "\x00")},
	}
	head, err := netlink.MarshalAttributes(names)
	if err != nil {
		return err
	}
	msgs := []netlink.Message{
		batchMessage(unix.NFNL_MSG_BATCH_BEGIN),
		{Header: netlink.Header{Type: ruleMsgType(unix.NFT_MSG_DELRULE), Flags: netlink.Request | netlink.Acknowledge},
			Data: append(nfgen(unix.NFPROTO_IPV4, 0), head...)},
	}
	for _, r := range rules {
		var list []netlink.Attribute
		for _, st := range r.Stmts {
			exprs, err := st.lower(l)
			if err != nil {
				return fmt.Errorf("rule %q: %w", r, err)
			}
			for _, e := range exprs {
				b, err := marshalExpr(e)
				if err != nil {
					return fmt.Errorf("rule %q: %w", r, err)
				}
				list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
			}
		}
		exprs, err := netlink.MarshalAttributes(list)
		if err != nil {
			return err
		}
		attrs := append(names[:2:2], netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: exprs})
		if r.Comment != "" {
			attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_RULE_USERDATA,
				Data: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
		}
		data, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return err
		}
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{Type: ruleMsgType(unix.NFT_MSG_NEWRULE),
				Flags: netlink.Request | netlink.Acknowledge | netlink.Create | unix.NLM_F_APPEND},
			Data: append(nfgen(unix.NFPROTO_IPV4, 0), data...)})
	}
	msgs = append(msgs, batchMessage(unix.NFNL_MSG_BATCH_END))
	sent, err := conn.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	// One acknowledgement (or error) per message that asked for one.
	for range sent[2 : len(sent)-1] {
		if _, err := conn.Receive(); err != nil {
			return fmt.Errorf("receive: %w", err)
		}
	}
	return nil
}

func ruleMsgType(msg int) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg)
}

func batchMessage(typ int) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
		Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)}
}

// nfgen is the nfgenmsg header of an nftables message.
func nfgen(family uint8, resID uint16) []byte {
	return binary.BigEndian.AppendUint16([]byte{family, unix.NFNETLINK_V0}, resID)
}

// marshalExpr encodes one expression as google/nftables does, except
// "ct original ip daddr", whose direction it adds.
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
