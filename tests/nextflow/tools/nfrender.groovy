// nfrender.groovy: render the script and stub blocks of Nextflow processes for a test, with
// Groovy 4 doing the interpolation, so that the shell commands a task would run can be
// executed outside Nextflow.
//
// Usage: nfrender.groovy REQUESTS.json   (prints a JSON list of results)
//
// Each request: {"module": "path/main.nf", "meta": {...}, "inputs": {name: value},
//   "params": {...}, "process_config": {...}, "profile": "test"}. An input value is a file
//   name (str), a list of file names, or [] for an empty optional path. process_config is
//   the `process` scope of `nextflow config -o json` (closures kept as source text).
//
// Each result: process name, label, container, inputs (qualifier, name, stageAs), outputs
// (emit, optional, path patterns, eval commands), `when`, the rendered `script` and `stub`,
// and `errors` (a rendering failure is reported, never hidden).
import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import org.codehaus.groovy.ast.ASTNode
import org.codehaus.groovy.ast.expr.*
import org.codehaus.groovy.ast.stmt.*
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.Phases

// A staged input file: interpolates as its name in the task directory, like a Nextflow path.
class StagedPath {
    String name
    String toString() { name }
    String getName() { name.tokenize('/')[-1] }
    String getBaseName() { getName().replaceFirst(/\.[^.]+$/, '') }
    String getExtension() { getName().contains('.') ? getName().tokenize('.')[-1] : '' }
    boolean asBoolean() { true }
}

// Several staged files: interpolate blank-separated, like Nextflow's BlankSeparatedList,
// which delegates to a List without implementing Collection, so that a GString calls its
// toString() instead of formatting it as a list.
class StagedList {
    @Delegate(interfaces = false) List target
    String toString() { target.join(' ') }
    boolean asBoolean() { !target.isEmpty() }
}

String sourceOf(List<String> lines, ASTNode first, ASTNode last) {
    def out = []
    for (int i = first.lineNumber; i <= last.lastLineNumber; i++) {
        String line = lines[i - 1]
        int from = (i == first.lineNumber) ? first.columnNumber - 1 : 0
        int to = (i == last.lastLineNumber) ? last.lastColumnNumber - 1 : line.length()
        out << line.substring(from, Math.min(to, line.length()))
    }
    return out.join('\n')
}

List<Expression> argumentsOf(MethodCallExpression call) {
    def args = call.arguments
    return args instanceof TupleExpression ? args.expressions : [args]
}

Map optionsOf(List<Expression> args) {
    def options = [:]
    args.findAll { it instanceof MapExpression }.each { MapExpression map ->
        map.mapEntryExpressions.each { entry -> options[entry.keyExpression.text] = entry.valueExpression }
    }
    return options
}

// The qualifier calls of one input or output declaration: `tuple val(a), path(b)` -> [val(a), path(b)].
List<MethodCallExpression> qualifiersOf(MethodCallExpression declaration) {
    if (declaration.methodAsString != 'tuple') return [declaration]
    return argumentsOf(declaration).findAll { it instanceof MethodCallExpression }
}

Object stage(Object value) {
    if (value instanceof List) return value.isEmpty() ? [] : new StagedList(target: value.collect { new StagedPath(name: it.toString()) })
    if (value == null) return null
    return new StagedPath(name: value.toString())
}

Map renderOne(Map request) {
    def errors = []
    File moduleFile = new File(request.module)
    def lines = moduleFile.readLines()
    def cu = new CompilationUnit(new CompilerConfiguration())
    def su = cu.addSource(moduleFile)
    cu.compile(Phases.CONVERSION)

    def processCall = su.AST.statementBlock.statements
        .findAll { it instanceof ExpressionStatement && it.expression instanceof MethodCallExpression }
        .collect { it.expression }
        .find { it.methodAsString == 'process' }
    if (processCall == null) return [module: request.module, errors: ["no process found in ${request.module}"]]
    def inner = argumentsOf(processCall)[0] as MethodCallExpression
    def body = (argumentsOf(inner)[0] as ClosureExpression).code as BlockStatement

    // Split the process body into its sections by statement label.
    def sections = [:].withDefault { [] }
    def current = 'directives'
    body.statements.each { Statement st ->
        if (st.statementLabels) current = st.statementLabels[-1]
        sections[current] << st
    }

    def shell = new GroovyShell(new Binding())
    def binding = shell.context
    def meta = request.meta ?: [:]
    def params = request.params ?: [:]
    binding.setVariable('params', params)
    binding.setVariable('meta', meta)
    binding.setVariable('moduleDir', moduleFile.absoluteFile.parentFile.path)
    binding.setVariable('projectDir', request.projectDir ?: '.')
    binding.setVariable('workflow', [containerEngine: request.containerEngine, profile: request.profile ?: 'standard'])

    // Directives
    def label = null
    Expression containerExpression = null
    sections['directives'].each { Statement st ->
        def call = st.expression as MethodCallExpression
        def first = argumentsOf(call)[0]
        if (call.methodAsString == 'label') label = first.text
        if (call.methodAsString == 'container') containerExpression = first
    }

    // task: the process config that applies to this process, in Nextflow's order of
    // precedence (generic settings, then withLabel, then withName), evaluated for a first
    // attempt. Closures see `task`, `params`, `meta` and `workflow`, as in a real run.
    def task = [attempt: 1, index: 1, process: inner.methodAsString, cpus: 1, accelerator: null, ext: [:]]
    binding.setVariable('task', task)
    def processConfig = request.process_config ?: [:]
    def selected = processConfig.findAll { key, value -> !key.startsWith('withLabel:') && !key.startsWith('withName:') }
    processConfig.each { key, value -> if (key == "withLabel:${label}".toString()) selected.putAll(value) }
    processConfig.each { key, value ->
        if (key.startsWith('withName:') && inner.methodAsString ==~ key.substring('withName:'.length()).replaceAll(/^['"]|['"]$/, '')) {
            value.each { k, v -> k == 'ext' ? (selected.ext = (selected.ext ?: [:]) + v) : selected.put(k, v) }
        }
    }
    def evaluateSetting = { value ->
        def result = value instanceof String && value.trim().startsWith('{') ? shell.evaluate(value) : value
        result instanceof Closure ? result.call() : result
    }
    ['cpus', 'accelerator'].each { key ->
        if (!selected.containsKey(key)) return
        try { task[key] = evaluateSetting(selected[key]) }
        catch (Throwable t) { errors << "${key}: ${t.class.simpleName}: ${t.message}" }
    }
    def limits = selected.resourceLimits instanceof Map ? selected.resourceLimits : [:]
    if (limits.cpus != null && task.cpus != null) task.cpus = Math.min(task.cpus as int, limits.cpus as int)
    (selected.ext ?: [:]).each { key, source ->
        try { task.ext[key] = evaluateSetting(source) }
        catch (Throwable t) { errors << "ext.${key}: ${t.class.simpleName}: ${t.message}" }
    }

    def container = null
    if (containerExpression != null) {
        try { container = shell.evaluate(sourceOf(lines, containerExpression, containerExpression)).toString() }
        catch (Throwable t) { errors << "container: ${t.message}" }
    }

    // Inputs: bind each declared name to its staged value.
    def inputs = []
    sections['input'].each { Statement st ->
        qualifiersOf(st.expression as MethodCallExpression).each { MethodCallExpression q ->
            def args = argumentsOf(q)
            def variable = args.find { it instanceof VariableExpression }
            def options = optionsOf(args)
            def stageAs = options.stageAs ? options.stageAs.text : null
            inputs << [qualifier: q.methodAsString, name: variable?.text, stageAs: stageAs]
            if (variable && q.methodAsString == 'path') {
                if (!(request.inputs ?: [:]).containsKey(variable.text)) errors << "no value given for input '${variable.text}'"
                binding.setVariable(variable.text, stage(request.inputs[variable.text]))
            }
        }
    }

    // Outputs: file patterns and eval commands of each declaration.
    def outputs = []
    sections['output'].each { Statement st ->
        def declaration = st.expression as MethodCallExpression
        def options = optionsOf(argumentsOf(declaration))
        def out = [emit: options.emit?.text, optional: options.optional?.text == 'true', topic: options.topic?.text, patterns: [], evals: []]
        qualifiersOf(declaration).each { MethodCallExpression q ->
            def first = argumentsOf(q).find { !(it instanceof MapExpression) }
            if (q.methodAsString in ['path', 'file', 'eval']) {
                try {
                    def value = shell.evaluate(sourceOf(lines, first, first)).toString()
                    (q.methodAsString == 'eval' ? out.evals : out.patterns) << value
                } catch (Throwable t) { errors << "output ${out.emit}: ${t.message}" }
            }
        }
        outputs << out
    }

    def evaluateSection = { String name ->
        def statements = sections[name]
        if (!statements) return null
        try { return shell.evaluate(sourceOf(lines, statements[0], statements[-1]))?.toString() }
        catch (Throwable t) { errors << "${name}: ${t.class.simpleName}: ${t.message}"; return null }
    }
    def when = sections['when'] ? evaluateSection('when') : 'true'
    // Each evaluate() compiles a new Script, so the `def` variables of script and stub stay apart.
    def script = evaluateSection('script')
    def stubText = evaluateSection('stub')

    return [
        module: request.module, process: inner.methodAsString, label: label, container: container,
        inputs: inputs, outputs: outputs, when: when, script: script, stub: stubText,
        ext: task.ext.collectEntries { k, v -> [(k): v?.toString()] }, cpus: task.cpus, accelerator: task.accelerator, errors: errors,
    ]
}

def requests = new JsonSlurper().parse(new File(args[0]))
def results = requests.collect { request ->
    try { renderOne(request) }
    catch (Throwable t) { [module: request.module, errors: ["${t.class.simpleName}: ${t.message}".toString()]] }
}
println JsonOutput.prettyPrint(JsonOutput.toJson(results))
