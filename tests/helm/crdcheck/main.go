// crdcheck decodes Prometheus Operator objects (ServiceMonitor, PrometheusRule) from YAML documents on stdin
// into the operator's own Go types, refusing unknown fields and wrong types: the check kubernetes-validate
// cannot make for custom resources. Exit 0 when every document decodes, 1 with one line per problem otherwise.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func decode(doc []byte) error {
	var h header
	if err := yaml.Unmarshal(doc, &h); err != nil {
		return err
	}
	if h.APIVersion != "monitoring.coreos.com/v1" {
		return fmt.Errorf("%s %s: apiVersion %q is not monitoring.coreos.com/v1", h.Kind, h.Metadata.Name, h.APIVersion)
	}
	var target any
	switch h.Kind {
	case "ServiceMonitor":
		target = &monitoringv1.ServiceMonitor{}
	case "PrometheusRule":
		target = &monitoringv1.PrometheusRule{}
	default:
		return fmt.Errorf("%s %s: not a kind this tool checks", h.Kind, h.Metadata.Name)
	}
	if err := yaml.UnmarshalStrict(doc, target); err != nil {
		return fmt.Errorf("%s %s: %w", h.Kind, h.Metadata.Name, err)
	}
	return nil
}

func main() {
	data, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	failed, checked := false, 0
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		checked++
		if err := decode(doc); err != nil {
			fmt.Println(err)
			failed = true
		}
	}
	fmt.Fprintf(os.Stderr, "crdcheck: %d document(s)\n", checked)
	if failed {
		os.Exit(1)
	}
}
