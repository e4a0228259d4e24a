// gotemplate renders External Secrets Operator templates (engine v2) for
// tests/test_external_secrets.py, the way the operator's runtime/template/v2 executes
// one: Go's text/template, the Masterminds sprig v3 function map without env and
// expandenv, missingkey=error, the fetched values as a map of strings, delimiters {{ }}
// (the operator's default). The operator's own functions (pkcs12, jwk, ...) are left
// out: no template of ours uses them.
//
// stdin:  {"templates": {"<key>": "<template>"}, "data": {"<secretKey>": "<value>"}}
// stdout: {"<key>": "<rendered>"}; a template that fails to parse or run exits 1.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

type request struct {
	Templates map[string]string `json:"templates"`
	Data      map[string]string `json:"data"`
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate: bad request:", err)
		os.Exit(1)
	}
	funcs := sprig.TxtFuncMap()
	// The operator removes these two for security; no template of ours may rely on them.
	delete(funcs, "env")
	delete(funcs, "expandenv")
	out := map[string]string{}
	for key, text := range req.Templates {
		// As the operator parses a template: missing keys are errors, not "<no value>".
		tpl, err := template.New(key).Option("missingkey=error").Funcs(funcs).Parse(text)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gotemplate: %s: %v\n", key, err)
			os.Exit(1)
		}
		var buf bytes.Buffer
		if err := tpl.Execute(&buf, req.Data); err != nil {
			fmt.Fprintf(os.Stderr, "gotemplate: %s: %v\n", key, err)
			os.Exit(1)
		}
		out[key] = buf.String()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
