package email

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	texttemplate "text/template"
	"text/template/parse"
)

// The email templates, one directory each (see templates/README.md). The
// directory names are the template names the SQL contract accepts.
//
//go:embed templates
var templateFiles embed.FS

// TemplateCustom is the template whose subject, html and text come in the
// args as they are.
const TemplateCustom = "custom"

// emailTemplate is one parsed template directory.
type emailTemplate struct {
	name    string
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
	// needs are the data fields the template mentions as .Data.<field>,
	// sorted: each must be present and not empty.
	needs []string
}

// templateView is what a template sees.
type templateView struct {
	Workspace struct{ Name, Slug string }
	Data      map[string]any
}

type rendering struct{ Subject, HTML, Text string }

// loadTemplates parses every template directory under dir in fsys.
func loadTemplates(fsys fs.FS, dir string) (map[string]*emailTemplate, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("email templates: %w", err)
	}
	out := map[string]*emailTemplate{}
	for _, e := range entries {
		if !e.IsDir() {
			continue // README.md
		}
		name := e.Name()
		if !validTemplateName(name) || name == TemplateCustom {
			return nil, fmt.Errorf("email template directory %q: want a name of lowercase letters, digits and underscores, not %q", name, TemplateCustom)
		}
		read := func(file string) (string, error) {
			b, err := fs.ReadFile(fsys, path.Join(dir, name, file))
			if err != nil {
				return "", fmt.Errorf("email template %q: %w", name, err)
			}
			return string(b), nil
		}
		subject, err := read("subject.txt")
		if err != nil {
			return nil, err
		}
		text, err := read("body.txt")
		if err != nil {
			return nil, err
		}
		html, err := read("body.html")
		if err != nil {
			return nil, err
		}
		t := &emailTemplate{name: name}
		// missingkey=error backs up the needs check for fields it cannot
		// see (a .Data.x inside a with/range block where dot has moved).
		if t.subject, err = texttemplate.New(name + "/subject.txt").Option("missingkey=error").Parse(subject); err != nil {
			return nil, err
		}
		if t.text, err = texttemplate.New(name + "/body.txt").Option("missingkey=error").Parse(text); err != nil {
			return nil, err
		}
		if t.html, err = htmltemplate.New(name + "/body.html").Option("missingkey=error").Parse(html); err != nil {
			return nil, err
		}
		needs := map[string]bool{}
		for _, tt := range append(t.subject.Templates(), t.text.Templates()...) {
			dataFields(tt.Tree.Root, needs)
		}
		for _, tt := range t.html.Templates() {
			dataFields(tt.Tree.Root, needs)
		}
		t.needs = slices.Sorted(maps.Keys(needs))
		out[name] = t
	}
	if len(out) == 0 {
		return nil, errors.New("email templates: none found")
	}
	return out, nil
}

func validTemplateName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// dataFields collects the <field> of every .Data.<field> under n.
func dataFields(n parse.Node, into map[string]bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			dataFields(c, into)
		}
	case *parse.ActionNode:
		dataFields(n.Pipe, into)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			dataFields(c, into)
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			dataFields(a, into)
		}
	case *parse.FieldNode:
		if len(n.Ident) >= 2 && n.Ident[0] == "Data" {
			into[n.Ident[1]] = true
		}
	case *parse.ChainNode:
		dataFields(n.Node, into)
	case *parse.IfNode:
		dataFields(n.Pipe, into)
		dataFields(n.List, into)
		dataFields(n.ElseList, into)
	case *parse.RangeNode:
		dataFields(n.Pipe, into)
		dataFields(n.List, into)
		dataFields(n.ElseList, into)
	case *parse.WithNode:
		dataFields(n.Pipe, into)
		dataFields(n.List, into)
		dataFields(n.ElseList, into)
	case *parse.TemplateNode:
		dataFields(n.Pipe, into)
	}
}

// render fills the template for a workspace. A missing data field is the
// caller's mistake: the error names it.
func (t *emailTemplate) render(workspaceName, workspaceSlug string, data map[string]any) (rendering, error) {
	var missing []string
	for _, f := range t.needs {
		v, ok := data[f]
		if s, isString := v.(string); !ok || v == nil || isString && strings.TrimSpace(s) == "" {
			missing = append(missing, "data."+f)
		}
	}
	if len(missing) > 0 {
		return rendering{}, fmt.Errorf("template %q needs %s", t.name, strings.Join(missing, ", "))
	}
	view := templateView{Data: data}
	view.Workspace.Name, view.Workspace.Slug = workspaceName, workspaceSlug
	var subject, text, html bytes.Buffer
	if err := t.subject.Execute(&subject, view); err != nil {
		return rendering{}, fmt.Errorf("render template %q: %w", t.name, err)
	}
	if err := t.text.Execute(&text, view); err != nil {
		return rendering{}, fmt.Errorf("render template %q: %w", t.name, err)
	}
	if err := t.html.Execute(&html, view); err != nil {
		return rendering{}, fmt.Errorf("render template %q: %w", t.name, err)
	}
	r := rendering{Subject: strings.TrimSpace(subject.String()), HTML: html.String(), Text: text.String()}
	if err := checkSubject(r.Subject); err != nil {
		return rendering{}, fmt.Errorf("template %q: the rendered subject %q %v (from the workspace name or data?)", t.name, r.Subject, err)
	}
	if r.Subject == "" {
		return rendering{}, fmt.Errorf("template %q: the rendered subject is empty", t.name)
	}
	return r, nil
}
