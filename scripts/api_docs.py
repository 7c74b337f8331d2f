"""Write docs/api.md, the API reference, from the comments in protos/ (`make gen` runs it).

protoc (grpc_tools, already a dependency) compiles protos/ into a FileDescriptorSet that keeps the
source comments; this module renders every jobqueue.* package in it as one GitHub-flavoured
Markdown page: a table of contents, then per package its services (each rpc with request,
response, streaming and comment), its messages (a table of fields whose types link to their own
sections) and its enums. The same protos always give the same bytes: nothing here reads the clock,
the environment or a dict in an order not fixed by the descriptors. No maintained generator
(protoc-gen-doc is a Go binary fetched from GitHub) installs from the registries this project uses.

    python scripts/api_docs.py docs/api.md        # write the page
    python scripts/api_docs.py -                  # print it
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    EnumDescriptorProto,
    FieldDescriptorProto,
    FileDescriptorProto,
    FileDescriptorSet,
    ServiceDescriptorProto,
)

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
#: Only our packages are documented; the imports (google.protobuf) are linked to upstream instead.
OWN_PACKAGE = "jobqueue."
WELL_KNOWN = "https://protobuf.dev/reference/protobuf/google.protobuf/#"
#: Field numbers in descriptor.proto that make up SourceCodeInfo paths.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE = SERVICE_METHOD = 2
SourcePath = tuple[int, ...]


@dataclass(frozen=True)
class Section:
    """A message or enum to document: its full name (no leading dot) and where its comment is."""

    name: str
    path: SourcePath
    file: FileDescriptorProto
    message: DescriptorProto | None = None
    enum: EnumDescriptorProto | None = None


def compile_protos(proto_root: Path) -> FileDescriptorSet:
    """Every .proto under proto_root, compiled with its comments and everything it imports."""
    protos = sorted(path.relative_to(proto_root).as_posix() for path in proto_root.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.pb"
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", "--include_source_info",
             "--include_imports", f"--descriptor_set_out={out}", *protos],
            check=True,
            timeout=120,
        )  # fmt: skip
        return FileDescriptorSet.FromString(out.read_bytes())


def comments(file: FileDescriptorProto) -> dict[SourcePath, str]:
    """Each element's comment, by its SourceCodeInfo path: the leading one, else the trailing one."""
    found = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text:
            # protoc keeps the space after `//` on every line; deeper indentation is the author's.
            lines = [line.removeprefix(" ") for line in text.strip("\n").split("\n")]
            found[tuple(location.path)] = "\n".join(lines).strip()
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def escape(text: str) -> str:
    """Text safe as Markdown: a `<` outside code would open an HTML tag and vanish from the page,
    and a line opening with `#` would become a heading (and an anchor the links could collide with)."""
    parts = re.split(r"(`[^`]*`)", text)
    text = "".join(part if part.startswith("`") else part.replace("<", "&lt;") for part in parts)
    return re.sub(r"^(\s*)#", r"\1\\#", text, flags=re.M)


def items(paragraph: str) -> list[list[str]]:
    """A paragraph's lines grouped into the lines a reader sees, each a list of source lines.

    Comments lay out lists by indenting them (`//   "reverse_string": ...`), with deeper
    indentation for an item's continuation; Markdown would run them all into one line.
    """
    grouped: list[list[str]] = []
    start = 0  # the indentation of the current item's first line
    for line in paragraph.split("\n"):
        indent = len(line) - len(line.lstrip())
        continues = indent > start if start else indent == 0
        if grouped and continues and not re.match(r"[-*] |\d+\. ", line.lstrip()):
            grouped[-1].append(line.strip())
        else:
            grouped.append([line.strip()])
            start = indent
    return grouped


def prose(text: str) -> str:
    """A comment as Markdown paragraphs, its source lines kept, an indented item on a line of its own."""
    paragraphs = escape(text).split("\n\n")
    return "\n\n".join("<br>\n".join("\n".join(item) for item in items(p)) for p in paragraphs)


def cell(text: str) -> str:
    """A comment as one table cell: a cell holds no newline, so breaks are drawn with <br>."""
    paragraphs = escape(text).split("\n\n")
    joined = "<br><br>".join("<br>".join(" ".join(item) for item in items(p)) for p in paragraphs)
    return joined.replace("|", "\\|")


class Renderer:
    """Turns the descriptors of our packages into the page, heading by heading."""

    def __init__(self, files: list[FileDescriptorProto]) -> None:
        # Files with a service first: a package reads from what callers call to what workers see.
        self.files = sorted(files, key=lambda file: (not file.service, file.name))
        self.comments = {file.name: comments(file) for file in self.files}
        self.sections: list[Section] = []
        for file in self.files:
            for index, message in enumerate(file.message_type):
                self._collect(file, f"{file.package}.{message.name}", (FILE_MESSAGE, index), message)
            for index, enum in enumerate(file.enum_type):
                self.sections.append(Section(f"{file.package}.{enum.name}", (FILE_ENUM, index), file, enum=enum))
        self.map_entries = {
            section.name: section.message
            for section in self.sections
            if section.message is not None and section.message.options.map_entry
        }
        short = [self.short(section.name) for section in self.sections]
        # A name two packages share gets its full name in the heading, so each anchor is unique.
        self.titles = {
            section.name: name if short.count(name) == 1 else section.name
            for section, name in zip(self.sections, short, strict=True)
        }
        self.lines: list[str] = []

    def _collect(self, file: FileDescriptorProto, name: str, path: SourcePath, message: DescriptorProto) -> None:
        self.sections.append(Section(name, path, file, message=message))
        for index, nested in enumerate(message.nested_type):
            self._collect(file, f"{name}.{nested.name}", (*path, MESSAGE_NESTED, index), nested)
        for index, enum in enumerate(message.enum_type):
            self.sections.append(Section(f"{name}.{enum.name}", (*path, MESSAGE_ENUM, index), file, enum=enum))

    def short(self, name: str) -> str:
        """A type's name within its package (Outer.Inner for a nested one)."""
        package = next(file.package for file in self.files if name.startswith(file.package + "."))
        return name.removeprefix(package + ".")

    def comment(self, file: FileDescriptorProto, path: SourcePath) -> str:
        # buf lint (COMMENTS) makes every element carry one; an empty cell would still render.
        return self.comments[file.name].get(path, "")

    def link(self, type_name: str) -> str:
        """A type as Markdown, linked to its section here or to the upstream docs."""
        name = type_name.removeprefix(".")
        if name in self.map_entries:
            key, value = self.map_entries[name].field
            return f"map&lt;{self.field_type(key)}, {self.field_type(value)}&gt;"
        if name.startswith("google.protobuf."):
            short = name.removeprefix("google.protobuf.")
            return f"[`{name}`]({WELL_KNOWN}{re.sub(r'(?<!^)(?=[A-Z])', '-', short).lower()})"
        if name in self.titles:
            return f"[`{self.titles[name]}`](#{anchor(self.titles[name])})"
        return f"`{name}`"

    def field_type(self, field: FieldDescriptorProto) -> str:
        if field.type_name:
            return self.link(field.type_name)
        return f"`{FieldDescriptorProto.Type.Name(field.type).removeprefix('TYPE_').lower()}`"

    def label(self, field: FieldDescriptorProto, message: DescriptorProto) -> str:
        labels = []
        # A map is a repeated field of a synthetic entry message; its type already says map<K, V>.
        is_map = field.type_name.removeprefix(".") in self.map_entries
        if field.label == FieldDescriptorProto.LABEL_REPEATED and not is_map:
            labels.append("repeated")
        if field.proto3_optional:
            labels.append("optional")
        elif field.HasField("oneof_index"):
            labels.append(f"oneof `{message.oneof_decl[field.oneof_index].name}`")
        if field.options.deprecated:
            labels.append("deprecated")
        return ", ".join(labels)

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def render(self) -> str:
        self.emit(
            "# API reference",
            "",
            "<!-- Generated by `make gen` (scripts/api_docs.py) from the comments in protos/. Do not edit:",
            "     change the .proto files and run `make gen`; `make gen-check` fails while this page is stale. -->",
            "",
            "The gRPC API of the job queue, generated from the comments in [protos/](../protos). Every rpc takes",
            "one request message and answers one response message (or, where marked **stream**, a stream of them).",
            "",
            "## Contents",
            "",
        )
        packages = sorted({file.package for file in self.files})
        for package in packages:
            self.emit(f"- [{package}](#{anchor(package)})")
            for file in self._files(package):
                for service in file.service:
                    self.emit(f"  - [{service.name}](#{anchor(service.name)})")
            for title, kind in (("Messages", DescriptorProto), ("Enums", EnumDescriptorProto)):
                links = [self.link(s.name) for s in self._sections(package, kind)]
                if links:
                    self.emit(f"  - {title}: {', '.join(links)}")
        for package in packages:
            self._package(package)
        return "\n".join(self.lines) + "\n"

    def _files(self, package: str) -> list[FileDescriptorProto]:
        return [file for file in self.files if file.package == package]

    def _sections(self, package: str, kind: type[DescriptorProto | EnumDescriptorProto]) -> list[Section]:
        return [
            section
            for section in self.sections
            if section.file.package == package
            and isinstance(section.message or section.enum, kind)
            and section.name not in self.map_entries
        ]

    def _package(self, package: str) -> None:
        sources = ", ".join(f"[{Path(f.name).name}](../protos/{f.name})" for f in self._files(package))
        self.emit("", f"## {package}", "", f"Defined in {sources}.")
        for file in self._files(package):
            for index, service in enumerate(file.service):
                self._service(file, (FILE_SERVICE, index), service)
        for section in self._sections(package, DescriptorProto):
            assert section.message is not None
            self._message(section, section.message)
        for section in self._sections(package, EnumDescriptorProto):
            assert section.enum is not None
            self._enum(section, section.enum)

    def _service(self, file: FileDescriptorProto, path: SourcePath, service: ServiceDescriptorProto) -> None:
        self.emit("", f"### {service.name}", "", prose(self.comment(file, path)), "")
        self.emit("| RPC | Request | Response |", "|---|---|---|")
        for method in service.method:
            title = f"{service.name}.{method.name}"
            stream_in = "**stream** " if method.client_streaming else ""
            stream_out = "**stream** " if method.server_streaming else ""
            self.emit(
                f"| [{method.name}](#{anchor(title)}) | {stream_in}{self.link(method.input_type)} "
                f"| {stream_out}{self.link(method.output_type)} |"
            )
        for index, method in enumerate(service.method):
            stream_in = "stream " if method.client_streaming else ""
            stream_out = "stream " if method.server_streaming else ""
            signature = (
                f"`rpc {method.name}({stream_in}{method.input_type.rsplit('.', 1)[1]})"
                f" returns ({stream_out}{method.output_type.rsplit('.', 1)[1]})`"
            )
            comment = prose(self.comment(file, (*path, SERVICE_METHOD, index)))
            self.emit("", f"#### {service.name}.{method.name}", "", signature, "", comment)

    def _message(self, section: Section, message: DescriptorProto) -> None:
        self.emit("", f"### {self.titles[section.name]}", "", prose(self.comment(section.file, section.path)), "")
        if not message.field:
            self.emit("No fields.")
            return
        self.emit("| Field | Type | Label | Description |", "|---|---|---|---|")
        for index, field in enumerate(message.field):
            comment = cell(self.comment(section.file, (*section.path, MESSAGE_FIELD, index)))
            self.emit(f"| `{field.name}` | {self.field_type(field)} | {self.label(field, message)} | {comment} |")

    def _enum(self, section: Section, enum: EnumDescriptorProto) -> None:
        self.emit("", f"### {self.titles[section.name]}", "", prose(self.comment(section.file, section.path)), "")
        self.emit("| Value | Number | Description |", "|---|---|---|")
        for index, value in enumerate(enum.value):
            comment = cell(self.comment(section.file, (*section.path, ENUM_VALUE, index)))
            self.emit(f"| `{value.name}` | {value.number} | {comment} |")


def render(descriptors: FileDescriptorSet) -> str:
    """The page for every jobqueue.* file of the set."""
    files = [file for file in descriptors.file if file.package.startswith(OWN_PACKAGE)]
    page = Renderer(files).render()
    headings = re.findall(r"^#+ (.+)$", page, re.M)
    duplicates = sorted({anchor(h) for h in headings if [anchor(o) for o in headings].count(anchor(h)) > 1})
    if duplicates:
        # GitHub would suffix the second one with -1 and our links would land on the first.
        raise SystemExit(f"two headings share an anchor: {duplicates}")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("output", help="the page to write, or - for standard output")
    parser.add_argument("--protos", type=Path, default=PROTOS, help="the root of the .proto files")
    args = parser.parse_args()
    page = render(compile_protos(args.protos))
    if args.output == "-":
        sys.stdout.write(page)
    else:
        Path(args.output).write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
