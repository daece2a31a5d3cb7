// nfparse.groovy: offline check of Nextflow DSL2, config and nf-test files with the Groovy 4
// parser (CONVERSION phase: parse and AST only, nothing is executed), plus AST checks:
//   - process sections and input/output declarations (a missing comma shows up here),
//   - workflow sections,
//   - every relative `include { X } from './...'` resolves to a file that declares X,
//   - every `X.out.name` in a workflow names an `emit:` that the included X declares.
// Usage: nfparse.groovy FILE...   Exit status 1 on any error.
import org.codehaus.groovy.ast.CodeVisitorSupport
import org.codehaus.groovy.ast.expr.*
import org.codehaus.groovy.ast.stmt.*
import org.codehaus.groovy.control.*
import org.codehaus.groovy.control.messages.SyntaxErrorMessage

PROCESS_SECTIONS = ['input', 'output', 'when', 'script', 'shell', 'exec', 'stub'] as Set
IO_QUALIFIERS = ['val', 'path', 'file', 'tuple', 'env', 'stdin', 'stdout', 'each', 'eval'] as Set
WORKFLOW_SECTIONS = ['take', 'main', 'emit', 'publish'] as Set
errors = []
astCache = [:]

def error(String file, node, String message) { errors << "${file}:${node.lineNumber}:${node.columnNumber}: error: ${message}" }
def statementsOf(ClosureExpression closure) { closure.code instanceof BlockStatement ? closure.code.statements : [closure.code] }
def labelOf(Statement st) { st.statementLabels ? st.statementLabels[-1] : null }

// Parse a file to its AST (cached); null with errors recorded when it does not parse.
def parse(String file) {
    if (astCache.containsKey(file)) return astCache[file]
    def unit = new CompilationUnit(new CompilerConfiguration(tolerance: 10))
    def source = unit.addSource(new File(file))
    try {
        unit.compile(Phases.CONVERSION)
        astCache[file] = source.AST
    } catch (MultipleCompilationErrorsException e) {
        e.errorCollector.errors.each { m ->
            errors << (m instanceof SyntaxErrorMessage
                ? "${file}:${m.cause.line}:${m.cause.startColumn}: error: ${m.cause.originalMessage}"
                : "${file}: error: ${m.cause ?: m}")
        }
        astCache[file] = null
    }
    return astCache[file]
}

// Top-level `process NAME {}` and `workflow NAME {}` blocks as [kind, name, closure, statement].
def blocksOf(ast) {
    def blocks = []
    ast?.statementBlock?.statements?.each { st ->
        def ex = st instanceof ExpressionStatement ? st.expression : null
        if (!(ex instanceof MethodCallExpression) || !ex.implicitThis || !(ex.methodAsString in ['process', 'workflow'])) return
        def args = ex.arguments.expressions
        if (args.size() != 1) return
        if (args[0] instanceof ClosureExpression) blocks << [ex.methodAsString, '<entry>', args[0], st]
        else if (args[0] instanceof MethodCallExpression && args[0].arguments.expressions[0] instanceof ClosureExpression)
            blocks << [ex.methodAsString, args[0].methodAsString, args[0].arguments.expressions[0], st]
    }
    return blocks
}

// Names a process or workflow emits: `emit: name` options, or assignments in `emit:`.
def emitsOf(String kind, ClosureExpression closure) {
    def emits = [] as Set
    def section = null
    statementsOf(closure).each { st ->
        section = labelOf(st) ?: section
        def ex = st instanceof ExpressionStatement ? st.expression : null
        if (kind == 'process' && section == 'output' && ex instanceof MethodCallExpression) {
            ex.arguments.expressions.findAll { it instanceof MapExpression }.each { map ->
                map.mapEntryExpressions.findAll { it.keyExpression.text == 'emit' }.each { emits << it.valueExpression.text }
            }
        }
        if (kind == 'workflow' && section == 'emit') {
            if (ex instanceof BinaryExpression && ex.operation.text == '=') emits << ex.leftExpression.text
            else if (ex instanceof VariableExpression) emits << ex.name
        }
    }
    return emits
}

def checkProcess(String file, String name, ClosureExpression closure) {
    def section = null
    statementsOf(closure).each { st ->
        def label = labelOf(st)
        if (label && !(label in PROCESS_SECTIONS)) { error(file, st, "process ${name}: unknown section '${label}:'"); return }
        if (label) section = label
        def ex = st instanceof ExpressionStatement ? st.expression : null
        boolean call = ex instanceof MethodCallExpression && ex.implicitThis
        if (ex && section in ['input', 'output'] && !(call && ex.methodAsString in IO_QUALIFIERS))
            error(file, st, "process ${name}: invalid ${section} declaration '${ex.text.take(50)}' (missing comma?)")
        if (ex && section == null && !call && !(ex instanceof DeclarationExpression))
            error(file, st, "process ${name}: unexpected statement '${ex.text.take(50)}' (missing ':' after a label?)")
    }
    if (!('script' in statementsOf(closure).collect { labelOf(it) } || 'exec' in statementsOf(closure).collect { labelOf(it) }))
        error(file, closure, "process ${name}: no script: or exec: section")
}

// Resolve the includes of a file: alias -> [target file, declared name]. Reports unresolved ones.
def resolveIncludes(String file, ast) {
    def aliases = [:]
    ast?.statementBlock?.statements?.each { st ->
        def ex = st instanceof ExpressionStatement ? st.expression : null
        if (!(ex instanceof MethodCallExpression) || ex.methodAsString != 'from') return
        if (!(ex.objectExpression instanceof MethodCallExpression) || ex.objectExpression.methodAsString != 'include') return
        def target = ex.arguments.expressions[0]
        if (!(target instanceof ConstantExpression) || !target.value.toString().startsWith('.')) return
        File base = new File(new File(file).absoluteFile.parentFile, target.value.toString())
        File resolved = [new File(base.path + '.nf'), new File(base, 'main.nf'), base].find { it.isFile() }
        if (!resolved) { error(file, st, "include target not found: ${target.value}"); return }
        statementsOf(ex.objectExpression.arguments.expressions[0]).each { s ->
            def name = (s.expression.text =~ /\w+/)[0]
            def alias = name
            if (s.expression instanceof CastExpression) {   // `A as B` has the text '(B) A'
                name = s.expression.expression.text
                alias = s.expression.type.name
            }
            if (!(resolved.text =~ /(?m)^\s*(process|workflow|def)\s+(\w+\s+)?${name}\b/)) error(file, st, "'${name}' not declared in ${resolved}")
            else aliases[alias] = [resolved.path, name]
        }
    }
    return aliases
}

// Every `ALIAS.out.NAME` must name an emit of the included process or workflow.
def checkOutReferences(String file, ClosureExpression closure, Map aliases) {
    def visitor = new CodeVisitorSupport() {
        void visitPropertyExpression(PropertyExpression expression) {
            def owner = expression.objectExpression
            if (owner instanceof PropertyExpression && owner.propertyAsString == 'out' && owner.objectExpression instanceof VariableExpression) {
                def alias = owner.objectExpression.name
                if (aliases.containsKey(alias)) {
                    def (target, name) = aliases[alias]
                    def declared = blocksOf(parse(target)).find { it[1] == name }
                    def emits = declared ? emitsOf(declared[0], declared[2]) : [] as Set
                    if (!(expression.propertyAsString in emits))
                        error(file, expression, "${alias}.out.${expression.propertyAsString}: ${name} in ${target} emits no '${expression.propertyAsString}' (it emits ${emits.sort()})")
                }
            }
            super.visitPropertyExpression(expression)
        }
    }
    closure.code.visit(visitor)
}

args.each { String file ->
    def ast = parse(file)
    if (ast == null || !file.endsWith('.nf')) return
    def aliases = resolveIncludes(file, ast)
    blocksOf(ast).each { kind, name, ClosureExpression closure, st ->
        if (kind == 'process') {
            checkProcess(file, name, closure)
        } else {
            statementsOf(closure).each { s ->
                def label = labelOf(s)
                if (label && !(label in WORKFLOW_SECTIONS)) error(file, s, "workflow ${name}: unknown section '${label}:'")
            }
            checkOutReferences(file, closure, aliases)
        }
    }
}
errors.each { println it }
println(errors ? "nfparse: ${errors.size()} error(s) in ${args.size()} file(s)" : "nfparse: OK (${args.size()} file(s))")
System.exit(errors ? 1 : 0)
