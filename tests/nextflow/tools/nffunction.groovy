// nffunction.groovy: call one top-level `def` function of a Nextflow script with Groovy 4,
// for unit tests of pure helper functions (no Nextflow objects such as file() or workflow).
// Usage: nffunction.groovy FILE.nf FUNCTION ARGS.json   (ARGS.json: a JSON list of arguments)
// Prints the JSON of the return value.
import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.Phases

def (String file, String function, String argsFile) = args
def unit = new CompilationUnit(new CompilerConfiguration())
def source = unit.addSource(new File(file))
unit.compile(Phases.CONVERSION)
def method = source.AST.methods.find { it.name == function }
if (method == null) throw new IllegalArgumentException("no function '${function}' in ${file}")
def lines = new File(file).readLines()
def text = lines[(method.lineNumber - 1)..(method.lastLineNumber - 1)].join('\n')
def arguments = new JsonSlurper().parse(new File(argsFile))
def shell = new GroovyShell(new Binding([arguments: arguments]))
println JsonOutput.toJson(shell.evaluate("${text}\nreturn ${function}(*arguments)"))
