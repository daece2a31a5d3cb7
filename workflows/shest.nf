/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    IMPORT MODULES / SUBWORKFLOWS / FUNCTIONS
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

include { SHEST_QC               } from '../modules/local/shest/qc'
include { SHEST_INFER            } from '../modules/local/shest/infer'
include { SHEST_NICHE            } from '../modules/local/shest/niche'
include { SHEST_NICHECOHORT      } from '../modules/local/shest/nichecohort'
include { MULTIQC                } from '../modules/nf-core/multiqc/main'
include { SEGMENT_SLIDE          } from '../subworkflows/local/segment_slide'
include { paramsSummaryMap       } from 'plugin/nf-schema'
include { workflowSummaryMultiqc } from '../subworkflows/local/utils_shest_pipeline'
include { methodsDescriptionText } from '../subworkflows/local/utils_shest_pipeline'
include { workflowVersionsYaml   } from '../subworkflows/local/utils_shest_pipeline'
include { nucleiCount            } from '../subworkflows/local/utils_shest_pipeline'

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    RUN MAIN WORKFLOW
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

workflow SHEST {

    take:
    ch_samplesheet              // channel: [ meta, wsi, roi ], roi is [] when the samplesheet has none
    multiqc_config              // string: path of a custom MultiQC config, or null
    multiqc_logo                // string: path of a custom MultiQC logo, or null
    multiqc_methods_description // string: path of a custom methods description, or null
    outdir                      // string: output directory

    main:

    def ch_multiqc_files = channel.empty()

    // Model weights enter as task inputs, so no task downloads anything.
    def cellpose_model = params.segmenter == 'cellpose' ? file(params.cellpose_model, checkIfExists: true) : []
    def checkpoint     = params.checkpoint ? file(params.checkpoint, checkIfExists: true) : []
    def backbone       = params.backbone   ? file(params.backbone, checkIfExists: true)   : []
    def gene_panel     = params.gene_panel ? file(params.gene_panel, checkIfExists: true) : []

    //
    // MODULE: slide QC, tissue detection and the tile plan
    //
    SHEST_QC (
        ch_samplesheet
    )
    ch_multiqc_files = ch_multiqc_files.mix(SHEST_QC.out.mqc.map { _meta, table -> table })

    def ch_slides = ch_samplesheet.map { meta, wsi, _roi -> [ meta, wsi ] } // channel: [ meta, wsi ]

    //
    // SUBWORKFLOW: nuclear segmentation, one task per chunk of the tile plan
    //
    SEGMENT_SLIDE (
        ch_slides.join(SHEST_QC.out.plan), // channel: [ meta, wsi, tiles.json ]
        cellpose_model,
        params.seg_chunks
    )
    ch_multiqc_files = ch_multiqc_files.mix(SEGMENT_SLIDE.out.mqc.map { _meta, table -> table })

    //
    // A slide without nuclei (no tissue, or an ROI without cells) keeps its QC and
    // segmentation results but skips inference, instead of failing the cohort's run.
    //
    def ch_cells = SEGMENT_SLIDE.out.cells
        .join(SEGMENT_SLIDE.out.mqc)
        .filter { meta, _cells, mqc ->
            def nuclei = nucleiCount(mqc.text)
            if (nuclei == 0) {
                log.warn("[${meta.id}] No nuclei were segmented: inference and niche analysis are skipped for this slide; see ${outdir}/qc/${meta.id}/ and ${outdir}/segmentation/${meta.id}/.")
            }
            nuclei != 0
        }
        .map { meta, cells, _mqc -> [ meta, cells ] } // channel: [ meta, cells.parquet ]

    //
    // MODULE: cell types and gene expression for every nucleus
    //
    SHEST_INFER (
        ch_slides.join(ch_cells), // channel: [ meta, wsi, cells.parquet ]
        checkpoint,
        backbone,
        gene_panel
    )
    ch_multiqc_files = ch_multiqc_files.mix(SHEST_INFER.out.mqc.map { _meta, table -> table })

    //
    // MODULES: spatial niches per slide, then the cohort tables
    //
    if (!params.skip_niche) {
        SHEST_NICHE (
            SHEST_INFER.out.h5ad.join(ch_slides) // channel: [ meta, h5ad, wsi ]
        )
        ch_multiqc_files = ch_multiqc_files
            .mix(SHEST_NICHE.out.mqc.map { _meta, table -> table })
            .mix(SHEST_NICHE.out.infiltration_mqc.map { _meta, table -> table })

        def ch_cohort_tables = SHEST_NICHE.out.tables
            .flatMap { _meta, tables -> tables instanceof List ? tables : [ tables ] }
            .collect(sort: { a, b -> a.name <=> b.name })
            .map { tables -> [ [ id: 'cohort' ], tables ] } // channel: [ meta, [ csv, ... ] ]

        SHEST_NICHECOHORT (
            ch_cohort_tables
        )
    }

    //
    // Collate and save software versions from the `versions` topic
    //
    def ch_collated_versions = channel.topic('versions')
        .unique()
        .map { process, tool, version -> [ process.tokenize(':')[-1], "  ${tool}: ${version}" ] }
        .groupTuple()
        .map { process, tool_versions -> "${process}:\n${tool_versions.unique().sort().join('\n')}" }
        .mix(channel.of(workflowVersionsYaml()))
        .collectFile(
            storeDir: "${outdir}/pipeline_info",
            name: 'shest_software_mqc_versions.yml',
            sort: true,
            newLine: true
        )

    //
    // MODULE: MultiQC
    //
    ch_multiqc_files = ch_multiqc_files.mix(ch_collated_versions)

    def summary_params      = paramsSummaryMap(workflow, parameters_schema: "nextflow_schema.json")
    def ch_workflow_summary = channel.value(workflowSummaryMultiqc(summary_params))
    ch_multiqc_files = ch_multiqc_files.mix(ch_workflow_summary.collectFile(name: 'workflow_summary_mqc.yaml'))

    def methods_template = multiqc_methods_description
        ? file(multiqc_methods_description, checkIfExists: true)
        : file("${projectDir}/assets/methods_description_template.yml", checkIfExists: true)
    def ch_methods_description = channel.value(methodsDescriptionText(methods_template))
    ch_multiqc_files = ch_multiqc_files.mix(ch_methods_description.collectFile(name: 'methods_description_mqc.yaml', sort: true))

    MULTIQC (
        ch_multiqc_files
            .collect(sort: { a, b -> a.name <=> b.name })
            .map { files ->
                [
                    [ id: 'shest' ],
                    files,
                    multiqc_config
                        ? file(multiqc_config, checkIfExists: true)
                        : file("${projectDir}/assets/multiqc_config.yml", checkIfExists: true),
                    multiqc_logo ? file(multiqc_logo, checkIfExists: true) : [],
                    [],
                    [],
                ]
            }
    )

    emit:
    multiqc_report = MULTIQC.out.report.map { _meta, report -> [ report ] }.toList() // channel: [ multiqc_report.html ]
    h5ad           = SHEST_INFER.out.h5ad                                             // channel: [ meta, h5ad ]
}

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    THE END
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/
