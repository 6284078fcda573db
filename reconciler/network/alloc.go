package network

import (
	"encoding/binary"
	"hash/fnv"
	"math/bits"
	"net/netip"

	"berth.dev/berth/render/api/v1alpha1"
)

// The NodePort range, as in a default Kubernetes cluster.
const (
	nodePortMin = 30000
	nodePortMax = 32767
)

// hashOf places a new allocation: the same name lands on the same free
// slot whatever else is allocated, unless that slot is taken.
func hashOf(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// addrAdd is a+off, invalid when it leaves the address family.
func addrAdd(a netip.Addr, off uint64) netip.Addr {
	if a.Is4() {
		b := a.As4()
		v := uint64(binary.BigEndian.Uint32(b[:])) + off
		if v > 0xffffffff || v < off {
			return netip.Addr{}
		}
		binary.BigEndian.PutUint32(b[:], uint32(v))
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	lo, carry := bits.Add64(lo, off, 0)
	hi, over := bits.Add64(hi, 0, carry)
	if over != 0 {
		return netip.Addr{}
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// addrAddShifted is a + off<<shift, invalid when it leaves the family.
func addrAddShifted(a netip.Addr, off uint64, shift uint) netip.Addr {
	if a.Is4() {
		if shift >= 32 {
			return netip.Addr{}
		}
		return addrAdd(a, off<<shift)
	}
	var hi, lo uint64
	switch {
	case shift >= 128:
		return netip.Addr{}
	case shift >= 64:
		hi = off << (shift - 64)
	case shift == 0:
		lo = off
	default:
		hi, lo = off>>(64-shift), off<<shift
	}
	b := a.As16()
	ahi, alo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	alo, carry := bits.Add64(alo, lo, 0)
	ahi, over := bits.Add64(ahi, hi, carry)
	if over != 0 {
		return netip.Addr{}
	}
	binary.BigEndian.PutUint64(b[:8], ahi)
	binary.BigEndian.PutUint64(b[8:], alo)
	return netip.AddrFrom16(b)
}

// span is last-first+1, capped at 1<<62 so that sums cannot overflow.
func span(r v1alpha1.AddressRange) uint64 {
	const limit = 1 << 62
	if r.First.Is4() {
		f, l := r.First.As4(), r.Last.As4()
		return uint64(binary.BigEndian.Uint32(l[:])) - uint64(binary.BigEndian.Uint32(f[:])) + 1
	}
	f, l := r.First.As16(), r.Last.As16()
	fhi, flo := binary.BigEndian.Uint64(f[:8]), binary.BigEndian.Uint64(f[8:])
	lhi, llo := binary.BigEndian.Uint64(l[:8]), binary.BigEndian.Uint64(l[8:])
	lo, borrow := bits.Sub64(llo, flo, 0)
	if hi, _ := bits.Sub64(lhi, fhi, borrow); hi != 0 || lo >= limit {
		return limit
	}
	return lo + 1
}

// addrPool hands out addresses of some ranges.
type addrPool struct {
	ranges []v1alpha1.AddressRange
	sizes  []uint64
	size   uint64
	free   uint64
	used   map[netip.Addr]string // by owner
}

func newAddrPool(ranges []v1alpha1.AddressRange) *addrPool {
	p := &addrPool{ranges: ranges, used: map[netip.Addr]string{}}
	for _, r := range ranges {
		n := span(r)
		p.sizes = append(p.sizes, n)
		if p.size+n < p.size || p.size+n > 1<<62 {
			n = 1<<62 - p.size
		}
		p.size += n
	}
	p.free = p.size
	return p
}

// serviceRange is where ClusterIPs come from: the service CIDR without its
// network address, its first address (kept for the kubernetes Service, as
// kube-apiserver keeps it) and, for IPv4, its broadcast address.
func serviceRange(cidr netip.Prefix) (v1alpha1.AddressRange, bool) {
	r := v1alpha1.RangeOf(cidr)
	first := addrAdd(r.First, 2)
	last := r.Last
	if cidr.Addr().Is4() {
		last = last.Prev()
	}
	if !first.IsValid() || !last.IsValid() || last.Less(first) {
		return v1alpha1.AddressRange{}, false
	}
	return v1alpha1.AddressRange{First: first, Last: last}, true
}

func (p *addrPool) contains(a netip.Addr) bool {
	for _, r := range p.ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// owner returns who holds a, or "".
func (p *addrPool) owner(a netip.Addr) string { return p.used[a] }

// claim gives a to key; false when another holds it.
func (p *addrPool) claim(a netip.Addr, key string) bool {
	if o, taken := p.used[a]; taken {
		return o == key
	}
	p.used[a] = key
	if p.contains(a) {
		p.free--
	}
	return true
}

// alloc gives key a free address, starting from where its name hashes to.
func (p *addrPool) alloc(key string) (netip.Addr, bool) {
	if p.free == 0 {
		return netip.Addr{}, false
	}
	start := hashOf(key) % p.size
	for i := uint64(0); i < p.size; i++ {
		a := p.at((start + i) % p.size)
		if _, taken := p.used[a]; !taken {
			p.claim(a, key)
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (p *addrPool) at(i uint64) netip.Addr {
	for j, r := range p.ranges {
		if i < p.sizes[j] {
			return addrAdd(r.First, i)
		}
		i -= p.sizes[j]
	}
	return netip.Addr{}
}

// portPool hands out node ports.
type portPool struct {
	used map[int32]string
}

func (p *portPool) claim(n int32, key string) bool {
	if o, taken := p.used[n]; taken {
		return o == key
	}
	p.used[n] = key
	return true
}

func (p *portPool) alloc(key string) (int32, bool) {
	const size = nodePortMax - nodePortMin + 1
	start := hashOf(key) % size
	for i := uint64(0); i < size; i++ {
		n := nodePortMin + int32((start+i)%size)
		if _, taken := p.used[n]; !taken {
			p.used[n] = key
			return n, true
		}
	}
	return 0, false
}

// cidrPool hands out machine pod CIDRs of one size from the Cluster's pod
// CIDR; machines with their own spec.podCIDR take theirs first.
type cidrPool struct {
	within netip.Prefix
	bits   int
	count  uint64
	used   []netip.Prefix
}

func newCIDRPool(within netip.Prefix, maskSize int) *cidrPool {
	p := &cidrPool{within: within, bits: max(maskSize, within.Bits())}
	if p.bits > within.Addr().BitLen() {
		p.bits = within.Addr().BitLen()
	}
	if n := p.bits - within.Bits(); n < 62 {
		p.count = 1 << n
	} else {
		p.count = 1 << 62
	}
	return p
}

// fits reports whether c is one of the pool's slots.
func (p *cidrPool) fits(c netip.Prefix) bool {
	return c.IsValid() && c.Bits() == p.bits && c == c.Masked() && p.within.Contains(c.Addr())
}

func (p *cidrPool) free(c netip.Prefix) bool {
	for _, u := range p.used {
		if u.Overlaps(c) {
			return false
		}
	}
	return true
}

func (p *cidrPool) claim(c netip.Prefix) { p.used = append(p.used, c) }

func (p *cidrPool) alloc(key string) (netip.Prefix, bool) {
	if !p.within.IsValid() {
		return netip.Prefix{}, false
	}
	hostBits := uint(p.within.Addr().BitLen() - p.bits)
	start := hashOf(key) % p.count
	for i := uint64(0); i < p.count && i < 1<<20; i++ {
		slot := (start + i) % p.count
		c := netip.PrefixFrom(addrAddShifted(p.within.Addr(), slot, hostBits), p.bits)
		if c.Addr().IsValid() && p.free(c) {
			p.claim(c)
			return c, true
		}
	}
	return netip.Prefix{}, false
}
