//
// Nuclear segmentation of each slide: one task per chunk of its tile plan, then one
// merge of the chunk tables into the slide's cell table.
//

include { SHEST_SEGMENT    } from '../../../modules/local/shest/segment'
include { SHEST_MERGECELLS } from '../../../modules/local/shest/mergecells'

workflow SEGMENT_SLIDE {

    take:
    ch_slide_plan  // channel: [ meta, wsi, tiles.json ]
    cellpose_model // value channel: Cellpose model file, or [] for the watershed backend
    n_chunks       // integer: chunks in every tile plan (`shest qc --chunks`)

    main:

    //
    // Scatter: one task per chunk, numbered in meta.chunk.
    //
    def ch_chunks = ch_slide_plan
        .flatMap { meta, wsi, plan ->
            (0..<n_chunks).collect { chunk -> [ meta + [ chunk: chunk ], wsi, plan ] }
        }

    SHEST_SEGMENT (
        ch_chunks,
        cellpose_model
    )

    //
    // Gather: groupKey releases a slide as soon as all of its chunks are done; the
    // tables are sorted by file name so that the merge task hashes the same on -resume.
    //
    def ch_chunk_tables = SHEST_SEGMENT.out.cells
        .map { meta, table ->
            def slide_meta = meta.findAll { key, _value -> key != 'chunk' }
            [ groupKey(slide_meta, n_chunks), table ]
        }
        .groupTuple()
        .map { key, tables -> [ key.getGroupTarget(), tables.sort { table -> table.name } ] }

    SHEST_MERGECELLS (
        ch_chunk_tables
    )

    emit:
    cells  = SHEST_MERGECELLS.out.cells  // channel: [ meta, cells.parquet ]
    nuclei = SHEST_MERGECELLS.out.nuclei // channel: [ meta, nuclei.geojson ]
    mqc    = SHEST_MERGECELLS.out.mqc    // channel: [ meta, _segmentation_mqc.tsv ]
}
