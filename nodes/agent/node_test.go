package agent

import "testing"

func TestParseCgroup(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     cgroupPaths
		ok       bool
	}{
		{"v2", "0::/berth-a1/pod-x/ctr\n", cgroupPaths{mem: "/berth-a1/pod-x/ctr", cpu: "/berth-a1/pod-x/ctr"}, true},
		{"v1 with joined controllers",
			"9:name=systemd:/\n4:memory:/berth-a1/pod-x/ctr\n2:cpu,cpuacct:/berth-a1/pod-x/ctr\n0::/\n",
			cgroupPaths{v1: true, mem: "memory/berth-a1/pod-x/ctr", cpu: "cpu,cpuacct/berth-a1/pod-x/ctr"}, true},
		{"v1 separate cpuacct", "4:memory:/a\n2:cpuacct:/a\n1:cpu:/a\n",
			cgroupPaths{v1: true, mem: "memory/a", cpu: "cpuacct/a"}, true},
		{"nothing", "", cgroupPaths{}, false},
	} {
		got, ok := parseCgroup([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("%s: parseCgroup = %+v, %v; want %+v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}
