package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"berth.dev/berth/nodes/api"
	nodefleet "berth.dev/berth/nodes/fleet"
)

// fleetServices returns the Services as the agents hold them, asked of
// the first machine that holds a Network and answers (every machine is given
// the same Services in a pass). ok is false when none does.
func fleetServices(ctx context.Context, fl *nodefleet.Fleet, obs []nodefleet.Observation) (svcs []api.Service, from string, ok bool) {
	for _, o := range obs {
		if !o.Reachable || o.Node.Network.Generation == 0 {
			continue
		}
		c, err := fl.Client(o.Machine)
		if err != nil {
			continue
		}
		if n, err := c.Network(ctx); err == nil {
			return n.Services, o.Machine, true
		}
	}
	return nil, "", false
}

// printServices is kubectl get services (and endpoints, with eps).
func printServices(e *env, svcs []api.Service, namespace string, output string, endpoints bool) {
	var out []api.Service
	for _, s := range svcs {
		if namespace == "" || s.Namespace == namespace {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b api.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	if output == "json" || output == "yaml" {
		printObjects(e, out, output)
		return
	}
	what := "services"
	if endpoints {
		what = "endpoints"
	}
	if len(out) == 0 {
		noneFound(e, what, namespace)
		return
	}
	var header []string
	if namespace == "" {
		header = append(header, "NAMESPACE")
	}
	if endpoints {
		header = append(header, "NAME", "ENDPOINTS")
	} else {
		header = append(header, "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)")
	}
	var rows [][]string
	for _, s := range out {
		var row []string
		if namespace == "" {
			row = append(row, s.Namespace)
		}
		if endpoints {
			row = append(row, s.Name, endpointsText(s, output == "wide"))
		} else {
			row = append(row, s.Name, string(orDefault(string(s.Type), "ClusterIP")), clusterIPText(s), externalIPText(s), portsText(s))
		}
		rows = append(rows, row)
	}
	printTable(e.stdout, header, rows)
}

func clusterIPText(s api.Service) string {
	switch {
	case s.Headless:
		return "None"
	case len(s.ClusterIPs) == 0:
		return "<none>"
	}
	return s.ClusterIPs[0].String()
}

func externalIPText(s api.Service) string {
	switch {
	case s.ExternalName != "":
		return s.ExternalName
	case len(s.LoadBalancerIPs) > 0:
		ips := make([]string, len(s.LoadBalancerIPs))
		for i, a := range s.LoadBalancerIPs {
			ips[i] = a.String()
		}
		return strings.Join(ips, ",")
	case s.Type == "LoadBalancer":
		return "<pending>"
	}
	return "<none>"
}

// portsText is kubectl's PORT(S): 80/TCP, or 80:30080/TCP with a node port.
func portsText(s api.Service) string {
	if len(s.Ports) == 0 {
		return "<none>"
	}
	var ps []string
	for _, p := range s.Ports {
		t := fmt.Sprint(p.Port)
		if p.NodePort != 0 {
			t += fmt.Sprintf(":%d", p.NodePort)
		}
		ps = append(ps, t+"/"+orDefault(string(p.Protocol), "TCP"))
	}
	return strings.Join(ps, ",")
}

// endpointsText lists ready addresses with their ports, as kubectl does:
// the first three and "+ N more..." unless all is set.
func endpointsText(s api.Service, all bool) string {
	var eps []string
	for _, ep := range s.Endpoints {
		if !ep.Ready || ep.Terminating {
			continue
		}
		if len(ep.Ports) == 0 {
			eps = append(eps, ep.IP.String())
		}
		for _, p := range ep.Ports {
			eps = append(eps, fmt.Sprintf("%s:%d", ep.IP, p.Port))
		}
	}
	switch {
	case len(eps) == 0:
		return "<none>"
	case len(eps) > 3 && !all:
		return strings.Join(eps[:3], ",") + fmt.Sprintf(" + %d more...", len(eps)-3)
	}
	return strings.Join(eps, ",")
}
