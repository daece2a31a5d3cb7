//
// Start and end of a shest/shest run: parameter checks, samplesheet, summaries
//

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    IMPORT FUNCTIONS / MODULES / SUBWORKFLOWS
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

include { paramsHelp         } from 'plugin/nf-schema'
include { paramsSummaryLog   } from 'plugin/nf-schema'
include { validateParameters } from 'plugin/nf-schema'
include { samplesheetToList  } from 'plugin/nf-schema'

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    SUBWORKFLOW TO INITIALISE PIPELINE
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

workflow PIPELINE_INITIALISATION {

    take:
    version           // boolean: display version and exit
    validate_params   // boolean: validate the parameters against nextflow_schema.json
    monochrome_logs   // boolean: do not use coloured log output
    nextflow_cli_args //   array: positional arguments of `nextflow run`
    outdir            //  string: output directory
    input             //  string: path of the samplesheet
    slide_dir         //  string: folder for relative paths in the samplesheet, or null
    help              // boolean: display the help message and exit
    help_full         // boolean: display the full help message and exit
    show_hidden       // boolean: include hidden parameters in the help message

    main:

    //
    // Print the version and exit
    //
    if (version) {
        log.info("${workflow.manifest.name} ${workflowVersion()}")
        System.exit(0)
    }

    //
    // Help message, parameter summary and parameter validation (nf-schema)
    //
    def command = "nextflow run ${workflow.manifest.name} -profile <docker/singularity/.../institute> --input samplesheet.csv --outdir <OUTDIR>"
    if (help || help_full) {
        log.info(paramsHelp([ command: command, showHidden: show_hidden, fullHelp: help_full ], (help instanceof String && help != 'true') ? help : ''))
        System.exit(0)
    }
    log.info(paramsSummaryLog([:], workflow))
    if (validate_params) {
        validateParameters([:])
    }
    validateInputParameters()

    if (nextflow_cli_args[0]) {
        log.warn("Positional argument `${nextflow_cli_args[0]}` is ignored: pipeline options start with `--`, and `-profile` takes a comma-separated list without spaces.")
    }
    if (workflow.profile == 'standard' && workflow.configFiles.size() <= 1) {
        log.warn("No profile or custom config given: tasks run with the software on your PATH. Use `-profile docker`, `singularity`, `apptainer` or `conda`.")
    }

    //
    // Samplesheet -> channel: [ meta, wsi, roi ]. nf-schema rejects a missing file,
    // a sample name with spaces or a duplicated sample before any task starts.
    //
    def samplesheet = input
    if (slide_dir) {
        def resolved = workflow.workDir.resolve('samplesheet.resolved.csv')
        resolved.text = resolveSamplesheetPaths(file(input, checkIfExists: true).text, file(slide_dir, type: 'dir', checkIfExists: true).toUriString())
        samplesheet = resolved
    }
    def ch_samplesheet = channel
        .fromList(samplesheetToList(samplesheet, "${projectDir}/assets/schema_input.json"))
        .map { meta, wsi, roi -> [ meta, wsi, roi ?: [] ] }

    emit:
    samplesheet = ch_samplesheet // channel: [ meta, wsi, roi ]
}

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    SUBWORKFLOW FOR PIPELINE COMPLETION
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

workflow PIPELINE_COMPLETION {

    take:
    outdir          //  string: output directory
    monochrome_logs // boolean: do not use coloured log output

    main:

    workflow.onComplete {
        def colour = monochrome_logs ? '' : (workflow.success ? '\033[0;32m' : '\033[0;31m')
        def reset  = monochrome_logs ? '' : '\033[0m'
        if (workflow.success && workflow.stats.ignoredCount == 0) {
            log.info("${colour}[${workflow.manifest.name}] Pipeline completed successfully; results in ${outdir}${reset}")
        }
        else if (workflow.success) {
            log.info("${colour}[${workflow.manifest.name}] Pipeline completed, but ${workflow.stats.ignoredCount} task(s) failed and were ignored; see ${outdir}/pipeline_info${reset}")
        }
        else {
            log.info("${colour}[${workflow.manifest.name}] Pipeline completed with errors${reset}")
        }
    }

    workflow.onError {
        log.error("Pipeline failed: ${workflow.errorMessage}. The failing task's .command.log and .command.err in its work directory hold the details.")
    }
}

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    FUNCTIONS
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

//
// Check the parameter combinations that the JSON schema cannot express
//
def validateInputParameters() {
    def problems = []
    if (params.segmenter == 'cellpose' && !params.cellpose_model) {
        problems << "--segmenter cellpose needs --cellpose_model, the path of the Cellpose model file (for example cpsam); tasks never download weights. Use --segmenter watershed to segment without weights."
    }
    if (params.demo_model && params.checkpoint) {
        problems << "--demo_model and --checkpoint were both given; choose one."
    }
    if (params.demo_model && (params.backbone || params.gene_panel)) {
        problems << "--demo_model uses no weights, so --backbone and --gene_panel cannot be given with it; drop them, or drop --demo_model and give --checkpoint."
    }
    if (params.niche_radius_um != null && params.niche_graph != 'radius') {
        problems << "--niche_radius_um sets the radius of the radius graph, but --niche_graph is '${params.niche_graph}'; add --niche_graph radius or drop --niche_radius_um."
    }
    if (!params.demo_model && !params.checkpoint) {
        problems << "--checkpoint is missing: give the SHEST checkpoint file, or --demo_model true for a run with the seeded demo network (outputs are marked as demo)."
    }
    if (!params.demo_model && !params.backbone) {
        problems << "--backbone is missing: give the local H-optimus-0 weights (a file or a folder); tasks run offline and never download them."
    }
    if (params.seg_chunks < 1) {
        problems << "--seg_chunks must be at least 1, found ${params.seg_chunks}."
    }
    if (problems) {
        error("Invalid parameters:\n  - " + problems.join('\n  - '))
    }
}

//
// Return the CSV text of a samplesheet with relative `wsi` and `roi` paths prefixed by
// base_dir. Absolute paths and URLs (s3://, https://, ...) are kept as they are.
// Fields are split at commas outside double quotes; a field is written quoted only when it
// holds a comma or a double quote, so numbers stay numbers for nf-schema.
//
def resolveSamplesheetPaths(String csv_text, String base_dir) {
    def lines = csv_text.readLines().findAll { line -> line.trim() }
    if (!lines) {
        return csv_text
    }
    def split_fields = { String line ->
        line.split(/,(?=(?:[^"]*"[^"]*")*[^"]*$)/, -1).collect { field -> field.trim().replaceAll(/^"|"$/, '').replace('""', '"') }
    }
    def quote = { String field -> field.contains(',') || field.contains('"') ? '"' + field.replace('"', '""') + '"' : field }
    def header = split_fields(lines[0])
    def path_columns = header.findIndexValues { column -> column in [ 'wsi', 'roi' ] }.collect { index -> index as int }
    def base = base_dir.endsWith('/') ? base_dir : base_dir + '/'
    def rows = lines.drop(1).collect { line ->
        def fields = split_fields(line)
        path_columns.each { index ->
            def value = index < fields.size() ? fields[index] : ''
            def is_absolute = value.startsWith('/') || value ==~ /^[A-Za-z][A-Za-z0-9+.-]*:\/\/.*/
            if (value && !is_absolute) {
                fields[index] = base + value
            }
        }
        fields.collect { field -> quote(field) }.join(',')
    }
    return ([ header.collect { column -> quote(column) }.join(',') ] + rows).join('\n') + '\n'
}

//
// Nuclei count of a slide from its segmentation MultiQC table (`nuclei` column of the
// first data row); -1 when the table has no such column.
//
def nucleiCount(String mqc_text) {
    def rows = mqc_text.readLines().findAll { line -> line.trim() && !line.startsWith('#') }
    if (rows.size() < 2) {
        return -1
    }
    def column = rows[0].split('\t').toList().indexOf('nuclei')
    def values = rows[1].split('\t', -1).toList()
    return column >= 0 && column < values.size() && values[column].isNumber() ? values[column].toBigDecimal().intValue() : -1
}

//
// Pipeline version with the short commit id when run from a git checkout
//
def workflowVersion() {
    def version_string = workflow.manifest.version ? "v${workflow.manifest.version}".replaceFirst(/^vv/, 'v') : ''
    if (workflow.commitId) {
        version_string += "-g${workflow.commitId.substring(0, 7)}"
    }
    return version_string
}

//
// Versions YAML entry of the workflow itself, beside the `versions` topic entries
//
def workflowVersionsYaml() {
    return "Workflow:\n  ${workflow.manifest.name}: ${workflowVersion()}\n  Nextflow: ${workflow.nextflow.version}"
}

//
// MultiQC section with the parameters that differ from their defaults
//
def workflowSummaryMultiqc(summary_params) {
    def rows = summary_params.collectMany { _group, group_params ->
        group_params.collect { key, value -> "        <dt>${key}</dt><dd><samp>${value ?: '<span style=\"color:#999999;\">N/A</span>'}</samp></dd>" }
    }
    def yaml_text = [
        "id: '${workflow.manifest.name.replace('/', '-')}-summary'",
        "description: ' - this information is collected when the pipeline is started.'",
        "section_name: '${workflow.manifest.name} Workflow Summary'",
        "section_href: '${workflow.manifest.homePage}'",
        "plot_type: 'html'",
        "data: |",
        "    <dl class=\"dl-horizontal\">",
    ] + rows + [ "    </dl>" ]
    return yaml_text.join('\n')
}

//
// In-text citations and references of the tools the run used
//
def toolCitationText() {
    def tools = [
        "QC, tiling and cell tables with SHEST (Jeong et al. 2026)",
        params.segmenter == 'cellpose' ? "nuclear segmentation with Cellpose (Stringer et al. 2021)" : "nuclear segmentation by watershed with scikit-image (van der Walt et al. 2014)",
        params.demo_model ? "a seeded demo network in place of the SHEST model (outputs are not predictions)" : "cell types and gene expression from the H-optimus-0 foundation model (Bioptimus 2024) with the SHEST heads (Jeong et al. 2026)",
        params.skip_niche ? '' : "spatial niche analysis with squidpy (Palla et al. 2022)",
        "reporting with MultiQC (Ewels et al. 2016)",
    ].findAll { text -> text }
    return "Tools used in the workflow included: ${tools.join(', ')}."
}

def toolBibliographyText() {
    def references = [
        "<li>Jeong et al. (2026) SHEST. Briefings in Bioinformatics.</li>",
        params.segmenter == 'cellpose' ? "<li>Stringer C, Wang T, Michaelos M, Pachitariu M. (2021) Cellpose: a generalist algorithm for cellular segmentation. Nature Methods 18, 100-106. doi: 10.1038/s41592-020-01018-x</li>" : "<li>van der Walt S, et al. (2014) scikit-image: image processing in Python. PeerJ 2:e453. doi: 10.7717/peerj.453</li>",
        params.skip_niche ? '' : "<li>Palla G, et al. (2022) Squidpy: a scalable framework for spatial omics analysis. Nature Methods 19, 171-178. doi: 10.1038/s41592-021-01358-2</li>",
        "<li>Ewels P, Magnusson M, Lundin S, Käller M. (2016) MultiQC: summarize analysis results for multiple tools and samples in a single report. Bioinformatics 32(19), 3047-3048. doi: 10.1093/bioinformatics/btw354</li>",
    ].findAll { text -> text }
    return references.join(' ')
}

//
// Methods section of the MultiQC report, rendered from a YAML template with the
// `workflow` and `manifest_map` values of this run
//
def methodsDescriptionText(mqc_methods_yaml) {
    def meta = [:]
    meta.workflow = workflow.toMap()
    meta['manifest_map'] = workflow.manifest.toMap()
    def dois = meta.manifest_map.doi ? meta.manifest_map.doi.tokenize(',').collect { doi -> doi.replace('https://doi.org/', '').trim() } : []
    meta['doi_text'] = dois.collect { doi -> "(doi: <a href='https://doi.org/${doi}'>${doi}</a>)" }.join(', ')
    meta['nodoi_text'] = dois ? '' : '<li>If available, cite the DOI of the pipeline version used.</li>'
    meta['tool_citations'] = toolCitationText()
    meta['tool_bibliography'] = toolBibliographyText()
    def engine = new groovy.text.SimpleTemplateEngine()
    return engine.createTemplate(mqc_methods_yaml.text).make(meta).toString()
}
